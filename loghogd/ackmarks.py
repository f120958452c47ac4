"""What loghogd remembers of one acknowledged-delivery client id, and who may use it.

Protocol 1.1 clients number their records per client_id; a ClientMark holds
the highest handled number and the few below it a crash left unwritten.
Runs of numbers travel as ascending [first, last] ranges.
"""

import functools
import hashlib
import hmac
import re
from typing import Dict, List, Optional, Tuple

CLIENT_ID = re.compile(r'[A-Za-z0-9_-]{1,64}\Z')
MAX_GAPS = 1024

Ranges = List[List[int]]


@functools.lru_cache(maxsize=1024)
def client_owner(app_id: str, secret: Optional[str]) -> str:
    """Who may use a client id: the application, plus a digest of the secret of a signed facility."""
    if secret is None:
        return app_id
    digest = hmac.new(secret.encode('utf-8'), b'loghogd client id owner', hashlib.sha256).hexdigest()[:16]
    return '%s\0%s' % (app_id, digest)


def owner_app(owner: str) -> str:
    return owner.partition('\0')[0]


def add_to_ranges(ranges: Ranges, first: int, last: int) -> None:
    """Append first..last to ascending [first, last] runs (all above them), growing the last run when it follows on."""
    if ranges and ranges[-1][1] + 1 == first:
        ranges[-1][1] = last
    else:
        ranges.append([first, last])


class ClientMark:
    """The highest handled seq of one client, and the few below it that were not.

    Gaps come only from a crash: records of a pass whose write was cut short
    while later records of the same pass reached another file. A client that
    skips numbers (it dropped records itself) leaves no gaps, so a peer cannot
    make loghogd remember more than MAX_GAPS numbers per client.
    """

    __slots__ = ('high', 'gaps', 'seen', 'owner')

    def __init__(self, high: int = 0, gaps: Optional[List[int]] = None, seen: float = 0.0, owner: str = '') -> None:
        self.high = high
        self.gaps = set(gaps or ())
        self.seen = seen
        self.owner = owner

    def handled(self, seq: int) -> bool:
        return seq <= self.high and seq not in self.gaps

    def add(self, seq: int) -> None:
        if seq > self.high:
            self.high = seq
        else:
            self.gaps.discard(seq)

    def forget(self, seqs: List[int]) -> None:
        """After a crash or a failed write: these were not written; the highest falls back below them."""
        self.gaps.update(seq for seq in seqs if seq <= self.high)
        while self.high in self.gaps:
            self.gaps.discard(self.high)
            self.high -= 1
        if len(self.gaps) > MAX_GAPS:
            self.gaps = set(sorted(self.gaps)[-MAX_GAPS:])


def in_ranges(ranges: Ranges, seq: int) -> bool:
    return any(first <= seq <= last for first, last in ranges)


def add_range(ranges: Ranges, first: int, last: int) -> None:
    """Add [first, last] to sorted, disjoint runs, merging the runs it touches."""
    merged: Ranges = []
    for run in sorted(ranges + [[first, last]]):
        if merged and run[0] <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], run[1])
        else:
            merged.append(list(run))
    ranges[:] = merged


def remove_from_ranges(ranges: Ranges, seq: int) -> None:
    for index, (first, last) in enumerate(ranges):
        if first <= seq <= last:
            ranges[index:index + 1] = [run for run in ([first, seq - 1], [seq + 1, last]) if run[0] <= run[1]]
            return


def parse_ack_fields(message: Dict[str, object]) -> Tuple[Optional[str], Optional[int]]:
    """client_id and seq of an ACK_REQUEST message, or (None, None) when they are invalid."""
    client_id = message.get('client_id')
    seq = message.get('seq')
    if type(client_id) is not str or not CLIENT_ID.match(client_id) or type(seq) is not int or not 0 < seq < 2 ** 63:
        return None, None
    return client_id, seq
