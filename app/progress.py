"""A terminal view of the engine's progress events: one bar per stepped phase, a line otherwise."""

from __future__ import annotations

import sys

from tqdm import tqdm

from worker.engine.context import ProgressEvent


class ProgressPrinter:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: tqdm | None = None
        self.key: tuple[str, str] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        key = (event.stage, event.message)
        if event.total is None:
            self.close()
            print(f"[{event.stage}] {event.message}", file=sys.stderr, flush=True)
            return
        if key != self.key:
            self.close()
            self.bar = tqdm(total=event.total, desc=f"[{event.stage}] {event.message}", file=sys.stderr,
                            unit="step", dynamic_ncols=True, leave=True)
            self.key = key
        assert self.bar is not None
        self.bar.update((event.step or 0) - self.bar.n)
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None
