"""A background sampler for the benchmarks' memory figures: a thread that calls ``sample()`` every ``interval`` seconds while in a ``with`` block."""

from __future__ import annotations

import threading
from typing import Self


class Sampler:
    """Calls :meth:`sample` every ``interval`` seconds on a thread of its own, from ``__enter__`` to ``__exit__``."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """Take one sample; subclasses say of what."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
