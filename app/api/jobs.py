"""/v1/jobs routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["jobs"])
