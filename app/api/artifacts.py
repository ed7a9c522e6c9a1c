"""/v1/artifacts routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["artifacts"])
