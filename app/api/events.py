"""/v1/events routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["jobs"])
