"""/v1/models routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["models"])
