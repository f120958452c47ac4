"""When the loop wakes up next: one "never", one function.

Every timed part (the server's deadlines, the rotator, the compressor, the
reporter, the stats file) answers how many seconds until it has work, or
NEVER. The loop sleeps until the earliest, and at most MAX_SLEEP: signals
wake it sooner through the wake-up socket, and the cap bounds how long a
jump of the wall clock can keep a due rotation waiting.
"""

import math
from typing import Iterable

NEVER = math.inf
MAX_SLEEP = 3600.0


def seconds_until(waits: Iterable[float]) -> float:
    """The loop's select() timeout: the earliest of `waits` (seconds, NEVER for none), from 0 to MAX_SLEEP."""
    return max(0.0, min(min(waits, default=NEVER), MAX_SLEEP))
