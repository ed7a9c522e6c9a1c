"""A hub model's config.json, fetched under a time limit, for callers that must answer promptly (the service's
submit-time dry run runs on a request thread).

Left to itself huggingface_hub waits a long time for a hub that does not answer: a HEAD with a 10 s timeout,
then, with nothing cached, the same HEAD again with a 60 s timeout and five retries with backoff (minutes).
Within `hub_time_limit(seconds)`, the dry run instead asks once (a HEAD without retries, timed out after
`seconds`), downloads config.json alone, and gives up after `seconds` in all: the hub being unreachable is then a
`HubUnavailableError`, and a repository, revision or config.json the hub says is not there a
`ModelReferenceError`. Outside it (the worker, the CLI), references.read_config keeps huggingface_hub's patience.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .errors import EngineError, ModelReferenceError

_LIMIT: ContextVar[float | None] = ContextVar("hub_time_limit", default=None)
# Fetches run here, so that the caller can stop waiting at its deadline. Few threads: when the hub hangs, at most
# this many fetches are left waiting on their own (short) timeouts; later ones queue and time out in the queue.
_FETCHES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hub-config")
_RETRYABLE = (408, 429)  # with 5xx: the hub's trouble, not the reference's


class HubUnavailableError(EngineError):
    """The hub could not be reached in time. Nothing in the recipe is wrong: the same request may pass later."""

    code = "hub_unavailable"


@contextmanager
def hub_time_limit(seconds: float) -> Iterator[None]:
    """Within it, read_config fetches an uncached hub model's config under this limit (see the module's doc)."""
    token = _LIMIT.set(seconds)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def current_limit() -> float | None:
    return _LIMIT.get()


def _download(repo_id: str, revision: str, seconds: float) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    # One HEAD, no retries: an unreachable hub fails here, after `seconds`, and this thread ends with it.
    get_hf_file_metadata(hf_hub_url(repo_id, "config.json", revision=revision), timeout=seconds)
    return Path(hf_hub_download(repo_id, "config.json", revision=revision, etag_timeout=seconds))


def fetch_config(repo_id: str, revision: str, seconds: float, field: str) -> Path:
    """The snapshot folder that holds config.json (in the local Hugging Face cache), within `seconds`."""
    from huggingface_hub.errors import HfHubHTTPError

    where = f"{repo_id}@{revision}"
    future = _FETCHES.submit(_download, repo_id, revision, seconds)
    try:
        return future.result(timeout=seconds).parent
    except FutureTimeout:
        future.cancel()  # still queued behind hung fetches: it never starts
        raise HubUnavailableError(f"the Hugging Face hub did not answer within {seconds:g} s for {where}; "
                                  "retry later", field=field) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and 400 <= status < 500 and status not in _RETRYABLE:
            raise ModelReferenceError(f"{where}: the hub has no config.json there (HTTP {status}: no such "
                                      "repository or revision, or a gated or private one)", field=field) from None
        raise HubUnavailableError(f"the Hugging Face hub failed for {where} (HTTP {status}); retry later",
                                  field=field) from None
    except Exception as exc:  # timeouts and transport errors of whichever HTTP client huggingface_hub uses
        # The class only: the message would show the hub endpoint's URL, which is this server's configuration.
        raise HubUnavailableError(f"the Hugging Face hub could not be reached for {where} "
                                  f"({type(exc).__name__}); retry later", field=field) from None
