"""Which loghogd the sender talks to: a list of servers, the first preferred.

The sender moves to the next server when the current one cannot be reached
or leaves records unacknowledged, and tries the first again every
`primary_retry_seconds` while it uses another, so a fleet returns to its
main server once that is back. Between rounds of the list it waits a
jittered, growing delay (Backoff).
"""

import random
import time
from typing import Iterable, List, Optional, Sequence, Tuple, Union

Address = Tuple[str, int]
ServerSpec = Union[str, Sequence[object]]
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0


def parse_servers(host: str, port: int, servers: Optional[Iterable[ServerSpec]] = None) -> List[Address]:
    """`servers` when given, else `host` split on commas; a name without ':port' gets `port`.

    Each item is 'name', 'name:port', '[v6::addr]:port' or a (name, port) pair.
    """
    items = list(servers) if servers is not None else [part.strip() for part in str(host).split(',')]
    addresses = [_parse_one(item, int(port)) for item in items if item != '']
    if not addresses:
        raise ValueError('no server given: host=%r, servers=%r' % (host, servers))
    return addresses


def _parse_one(item: ServerSpec, port: int) -> Address:
    if not isinstance(item, str):
        name, item_port = item
        return str(name), int(item_port)  # type: ignore[call-overload]
    if item.startswith('['):
        name, _, rest = item[1:].partition(']')
        return name, int(rest[1:]) if rest.startswith(':') else port
    if item.count(':') == 1:
        name, _, item_port = item.partition(':')
        try:
            return name, int(item_port)
        except ValueError:
            raise ValueError('bad port in server %r' % (item,)) from None
    return item, port


class Failover:
    """The current server of a list, the rotation to the next one, and the way back to the first."""

    def __init__(self, addresses: List[Address], primary_retry_seconds: float) -> None:
        self.addresses = addresses
        self.primary_retry_seconds = primary_retry_seconds
        self._index = 0
        self._left_primary_at = 0.0

    @property
    def current(self) -> Address:
        return self.addresses[self._index]

    @property
    def several(self) -> bool:
        return len(self.addresses) > 1

    @property
    def on_primary(self) -> bool:
        return self._index == 0

    def next(self) -> bool:
        """Move to the next server; True when that starts a new round (back at the first)."""
        if not self.several:
            return True
        self._index = (self._index + 1) % len(self.addresses)
        if self._index == 0:
            return True
        if self._index == 1:
            self._left_primary_at = time.monotonic()
        return False

    def primary_due(self) -> bool:
        """Whether it is time to try the first server again."""
        return self._index != 0 and time.monotonic() - self._left_primary_at >= self.primary_retry_seconds

    def tried_primary(self) -> None:
        """The first server was tried and is still down: try again after another interval."""
        self._left_primary_at = time.monotonic()

    def back_to_primary(self) -> None:
        self._index = 0

    def describe(self) -> str:
        return ', '.join(format_address(address) for address in self.addresses)


class Backoff:
    """Exponential delays with jitter, so a fleet of clients does not reconnect in step."""

    def __init__(self, first: float = BACKOFF_FIRST, maximum: float = BACKOFF_MAX) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def next_delay(self) -> float:
        delay = random.uniform(self._next / 2, self._next)
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first


def format_address(address: Address) -> str:
    host, port = address
    return '[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port)
