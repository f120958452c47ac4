"""Rate-limited reports of what went wrong, and peer text made safe to log.

A flood of bad frames must not turn into a flood of log lines, and what was
held back must still be said: each key's summary is written when its window
ends, from the loop's timer, even if no later report of that key comes.
"""

import logging
import time
from typing import Any, Callable, Dict

from loghogd.wakeup import NEVER

log = logging.getLogger('loghogd')

MAX_WINDOWS = 10000


def peer_text(value: Any) -> str:
    """A peer-supplied value made safe to put in the daemon's own log."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 200:
        text = text[:200] + '...'
    return ascii(text)[1:-1]


class _Window:
    __slots__ = ('start', 'logged', 'suppressed', 'level')

    def __init__(self, start: float, level: int) -> None:
        self.start = start
        self.logged = 0
        self.suppressed = 0
        self.level = level


class RateLimitedReporter:
    """Logs at most `burst` reports per key in each `interval` seconds, then sums up the rest."""

    def __init__(self, interval: float = 10.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._windows: Dict[str, _Window] = {}

    def report(self, key: str, level: int, message: str, *args: Any) -> None:
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            if window is not None:
                self._summarise(key, window, now)
            if len(self._windows) >= MAX_WINDOWS:
                self.flush(everything=True)
            window = self._windows[key] = _Window(now, level)
        if window.logged < self.burst:
            window.logged += 1
            log.log(level, message, *args)
        else:
            window.suppressed += 1
            window.level = max(window.level, level)

    def flush(self, everything: bool = False) -> None:
        """Write the summary of every window that has ended (of all, with `everything`) and forget them."""
        now = self._clock()
        ended = [key for key, window in self._windows.items() if everything or now - window.start >= self.interval]
        for key in ended:
            self._summarise(key, self._windows.pop(key), now)

    def next_flush(self) -> float:
        """Seconds until the first window with suppressed reports ends (NEVER when none has any)."""
        due = min((window.start for window in self._windows.values() if window.suppressed), default=None)
        return NEVER if due is None else max(0.0, due + self.interval - self._clock())

    @staticmethod
    def _summarise(key: str, window: _Window, now: float) -> None:
        if window.suppressed:
            log.log(window.level, '%d more reports of %s were suppressed in the last %.0f s',
                    window.suppressed, key, now - window.start)
