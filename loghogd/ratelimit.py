"""Records per second: a facility's rate_limit and the [server] peer_rate_limit.

Each limited thing (a facility's file, a peer address) has a token bucket
that holds one second of its rate: a sender may burst that much, then gets
the rate. The table of buckets is bounded; when full, the oldest eighth is
forgotten, which costs a forgotten sender at most one more second's burst.
"""

import itertools
import re
from typing import Dict, Hashable, List

MAX_BUCKETS = 65536
_RATE = re.compile(r'([0-9]+)\s*/\s*s')


def parse_rate(raw: str) -> float:
    """`N/s`: N records per second (N >= 1)."""
    match = _RATE.fullmatch(raw)
    if not match or int(match.group(1)) < 1:
        raise ValueError('%r is not a rate: write records per second, such as 100/s' % raw)
    return float(match.group(1))


def peer_address(peer: str) -> str:
    """The address part of a peer as the server names it (`192.0.2.1:5566`, `[2001:db8::1]:5566`)."""
    host, colon, port = peer.rpartition(':')
    if not colon or not port.isdigit():
        return peer
    return host[1:-1] if host.startswith('[') and host.endswith(']') else host


class RateLimits:
    """Token buckets by key; `allow(key, rate, now)` takes one token if there is one."""

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self.max_buckets = max_buckets
        self._buckets: Dict[Hashable, List[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, rate: float, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._forget_oldest()
            bucket = self._buckets[key] = [rate, now]
        else:
            bucket[0] = min(rate, bucket[0] + max(0.0, now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def _forget_oldest(self) -> None:
        """Drop the eighth made first: one scan frees room for many new keys."""
        for key in list(itertools.islice(self._buckets, max(1, self.max_buckets // 8))):
            del self._buckets[key]
