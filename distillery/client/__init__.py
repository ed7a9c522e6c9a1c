"""A typed Python client for the Distillery service (httpx; sync and asyncio). See docs/client.md.

    from distillery import Client
    client = Client("http://127.0.0.1:8000", api_key="dk_...")
"""

from .aio import AsyncClient
from .errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    DistilleryError,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from .sync import Client
from .transport import RetryPolicy
from .types import Artifact, Dataset, Event, Job, Model

__all__ = [
    "Artifact", "AsyncClient", "BadRequest", "ChecksumMismatch", "Client", "Conflict", "ConnectionFailed",
    "Dataset", "DistilleryError", "Event", "Job", "Model", "NotFound", "PayloadTooLarge", "RangeNotSatisfiable",
    "RateLimited", "RetryPolicy", "ServerError", "ServiceUnavailable", "Unauthorized", "ValidationError",
    "WaitTimeout",
]
