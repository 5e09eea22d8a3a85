"""Progress on stderr for long feature jobs (embed, index build, dedup): a tqdm bar with rate and ETA on a terminal,
plain periodic lines (count, percent, rate, ETA) otherwise, e.g. in a log file or under SLURM."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

ProgressCallback = Callable[[int, int], None]
"""``callback(done, total)``: items processed so far out of the total."""


class Progress:
    """Progress over a known number of items: a tqdm bar on a terminal, plain periodic lines otherwise.

    Both go to stderr. Without a terminal a line is printed at most every ``interval_s`` seconds and at the end;
    it states the count, the percentage, the rate and the estimated time left.

    Args:
        total: the number of items.
        desc: the label (e.g. ``embed``).
        enabled: False: print nothing (the callback still runs).
        callback: called as ``callback(done, total)`` after each update.
        interval_s: seconds between plain lines.
        unit: what is counted (``img``, ``vec`` ...); plain lines say ``images`` for ``img``.
        initial: items already done before this run (a resumed job): counted in ``done`` but not in the rate.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        enabled: bool = True,
        callback: ProgressCallback | None = None,
        interval_s: float = 10.0,
        unit: str = "img",
        initial: int = 0,
    ) -> None:
        self.total, self.desc, self.done, self.initial = total, desc, initial, initial
        self.enabled, self.callback, self.interval_s, self.unit = enabled, callback, interval_s, unit
        self.start = self.last_line = time.monotonic()
        on_terminal = enabled and _stderr_is_tty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr) if on_terminal else None

    def update(self, count: int) -> None:
        """Record ``count`` more processed items."""
        self.done += count
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self.bar is not None:
            self.bar.update(count)
        elif self.enabled and time.monotonic() - self.last_line >= self.interval_s:
            self._line()

    def close(self) -> None:
        """Finish the bar, or print the final line."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        rate = (self.done - self.initial) / max(self.last_line - self.start, 1e-9)
        percent = 100.0 * self.done / max(self.total, 1)
        left = self.total - self.done
        eta = f", ETA {_duration(left / rate)}" if left > 0 and rate > 0 else ""
        noun = "images" if self.unit == "img" else self.unit
        print(
            f"{self.desc}: {self.done}/{self.total} {noun} ({percent:.0f}%), {rate:.1f} {self.unit}/s{eta}",
            file=sys.stderr,
        )


def _duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _stderr_is_tty() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
