"""The handler's bounded queue of records, shared by the caller and the sender thread.

It holds what the sender will encode (the record's fields, not its frame),
so the cost of encoding stays out of the logging call, and it is bounded in
bytes (each record counts as the size the caller gives) and, optionally, in
records. With a spool behind it, the oldest records that no longer fit stay
queued as a range of seqs whose frames only the spool holds (item None).

Records leave the queue only when the sender confirms them, not when it takes
them: plain mode confirms once the kernel has accepted the bytes, and an
acknowledged mode (PROTOCOL.md extension 1.1) can confirm only what an ACK
covers, with no change here. Each record carries a sequence number so that
both modes can say "everything up to seq N is done".
"""

import itertools
import threading
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

MAX_DISK_GAPS = 1000
MAX_TAKE = 4096
"""Records take_unsent() hands out at most at once, however small."""
DISK_RECORD_GUESS = 256
"""Bytes a spooled record is taken to have, to size a batch read back from the spool."""

Entry = Tuple[int, Any]
"""(seq, item): seq rises by one per record pushed, starting at 1."""
Queued = Tuple[int, Any, int]
"""(seq, item, mark): the mark is the bytes pushed up to and including the record, so that the
bytes of any run of records is the difference of two marks (item None: only the spool has it)."""


class Outbox:
    """A FIFO of at most `max_bytes` (and `max_records`); when full the oldest is dropped and counted.

    push() is the only call the application thread makes: one short lock, no
    I/O. Waking the sender costs a lock release, and only when it is idle.
    """

    def __init__(self, max_bytes: int, max_records: Optional[int] = None) -> None:
        if max_records is not None and max_records < 1:
            raise ValueError('max_buffer_size must be at least 1, not %r' % (max_records,))
        if max_bytes < 1:
            raise ValueError('max_buffer_bytes must be at least 1, not %r' % (max_bytes,))
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.dropped_total = 0
        self.bytes = 0
        self._entries: Deque[Queued] = deque()
        self._marked = 0  # the bytes of every record ever pushed: the newest record's mark
        self._lock = threading.RLock()  # a signal handler that logs may interrupt push() in the same thread
        self._next_seq = 1
        self._first_unsent = 1
        self._first_unspooled = 1
        self._dropped_unreported = 0
        self._evicted_in_flight: Deque[int] = deque()
        self.spool_backed = False  # then records evicted once spooled move to the disk range
        self._disk_first = 0  # the disk range: seqs _disk_first.._disk_last, empty when _disk_first is 0
        self._disk_last = 0
        self._disk_gaps: Deque[List[int]] = deque()  # [first, last] runs inside it that were dropped
        self._disk_gap_total = 0
        self._sender_idle = False
        self._bell = threading.Lock()
        self._bell.acquire()

    def __len__(self) -> int:
        return len(self._entries) + self._disk_count()

    def push(self, item: Any, size: int) -> None:
        """Queue one record of about `size` bytes, dropping the oldest while the queue is over its bounds."""
        lock = self._lock
        lock.acquire()  # not `with`: this runs in every logging call, and here `with` costs a third more
        try:
            if self.bytes + size > self.max_bytes or (
                    self.max_records is not None and len(self._entries) >= self.max_records):
                self._make_room(size)
            seq = self._next_seq
            self._next_seq = seq + 1
            mark = self._marked = self._marked + size
            self._entries.append((seq, item, mark))
            self.bytes += size
            ring = self._sender_idle
            self._sender_idle = False
        finally:
            lock.release()
        if ring:
            self._ring()

    def has_unsent(self) -> bool:
        with self._lock:
            return self._has_unsent()

    def last_in_flight(self) -> int:
        """The seq of the newest record handed out and not yet confirmed; 0 when there is none."""
        with self._lock:
            entries = self._entries
            if self._evicted_in_flight or (entries and entries[0][0] < self._first_unsent) \
                    or (self._disk_first and self._disk_first < self._first_unsent):
                return self._first_unsent - 1
            return 0

    def count_dropped(self, count: int = 1) -> None:
        """Count records lost outside the queue (e.g. too big for a datagram)."""
        with self._lock:
            self._count_dropped(count)

    def take_dropped(self) -> int:
        """How many records were dropped since the last call; resets the count."""
        with self._lock:
            count = self._dropped_unreported
            self._dropped_unreported = 0
            return count

    def wait_for_unsent(self, timeout: Optional[float]) -> bool:
        """Block until a record is waiting to be sent, wake() is called, or `timeout` passes."""
        with self._lock:
            if self._has_unsent():
                return True
            self._sender_idle = True
        if timeout is None:
            self._bell.acquire()
        else:
            self._bell.acquire(timeout=timeout)
        with self._lock:
            self._sender_idle = False
            return self._has_unsent()

    def wake(self) -> None:
        """Make a waiting wait_for_unsent() return now (close and flush use it)."""
        with self._lock:
            self._sender_idle = False
        self._ring()

    def take_unsent(self, max_bytes: int, below: Optional[int] = None) -> List[Queued]:
        """The oldest records not yet handed out (with a seq under `below`), at least one and about `max_bytes`.

        They stay queued until confirm() covers them or rewind() hands them out again.
        """
        with self._lock:
            if self._disk_first and self._first_unsent <= self._disk_last:
                return self._take_from_disk(max_bytes)
            entries = self._entries
            if not entries:
                return []
            first = entries[0][0]  # then entries[i] has seq first + i: pushed in order, removed from the left
            start = max(self._first_unsent - first, 0)
            stop = min(len(entries), start + MAX_TAKE, len(entries) if below is None else max(below - first, start))
            if start >= stop:
                return []
            base = entries[start - 1][2] if start else self._marked - self.bytes
            taken = list(itertools.islice(entries, start, _end_within(entries, start, stop, base + max_bytes)))
            self._first_unsent = taken[-1][0] + 1
            return taken

    def unspooled(self) -> List[Entry]:
        """Every record not yet in the spool, oldest first (spooled() says when they are)."""
        with self._lock:
            entries = self._entries
            if not entries or entries[-1][0] < self._first_unspooled:
                return []
            start = max(self._first_unspooled - entries[0][0], 0)
            return [(seq, item) for seq, item, _ in itertools.islice(entries, start, None)]

    def spooled(self, last_seq: int) -> None:
        """Records up to `last_seq` are in the spool: they may be sent."""
        with self._lock:
            self._first_unspooled = max(self._first_unspooled, last_seq + 1)

    def first_unspooled(self) -> int:
        with self._lock:
            return self._first_unspooled

    def oldest_seq(self) -> int:
        """The seq of the oldest record still queued; the next seq when the queue is empty."""
        with self._lock:
            if self._disk_first:
                return self._disk_first
            return self._entries[0][0] if self._entries else self._next_seq

    def lose_from_disk(self, last_seq: int) -> None:
        """The spool no longer holds the disk range up to `last_seq` (its own bound): count it as dropped."""
        with self._lock:
            if self._disk_first and self._disk_first <= last_seq:
                before = self._disk_count()
                self._shrink_disk(min(last_seq, self._disk_last))
                self._count_dropped(before - self._disk_count())

    def confirm(self, last_seq: int) -> None:
        """Remove every record up to and including `last_seq`: it is delivered (or given up on)."""
        with self._lock:
            entries = self._entries
            count = min(len(entries), last_seq - entries[0][0] + 1) if entries else 0
            if count > 0:  # entries[i] has seq entries[0][0] + i
                self.bytes = self._marked - entries[count - 1][2]
                _pop_left(entries, count)
            evicted = self._evicted_in_flight
            while evicted and evicted[0] <= last_seq:
                evicted.popleft()
            if self._disk_first and self._disk_first <= last_seq:
                self._shrink_disk(min(last_seq, self._disk_last))
            if self._first_unsent <= last_seq:
                self._first_unsent = last_seq + 1

    def take_back(self, seq: int) -> None:
        """Hand out the records from `seq` on again later: the sender took them but did not send them."""
        with self._lock:
            self._first_unsent = min(self._first_unsent, seq)

    def rewind(self) -> None:
        """Hand out every unconfirmed record again, oldest first (after a lost connection)."""
        with self._lock:
            self._first_unsent = self._disk_first or (self._entries[0][0] if self._entries else self._next_seq)
            self._count_dropped(len(self._evicted_in_flight))
            self._evicted_in_flight.clear()

    def discard(self, kept_below: int = 0) -> int:
        """Give up on every record not yet confirmed (at close); return how many are lost, counted as dropped.

        Records with a seq under `kept_below` are not lost: they are in the spool.
        """
        with self._lock:
            count = sum(1 for seq, _, _ in self._entries if seq >= kept_below) + len(self._evicted_in_flight)
            self._disk_first = self._disk_last = 0  # in the spool: kept
            self._entries.clear()
            self.bytes = 0
            self._evicted_in_flight.clear()
            self._first_unsent = self._next_seq
            self._count_dropped(count)
            return count

    def has_unspooled(self) -> bool:
        with self._lock:
            return bool(self._entries) and self._entries[-1][0] >= self._first_unspooled

    def _make_room(self, size: int) -> None:
        """Evict the oldest records until one more of `size` bytes fits the bounds (push() holds the lock)."""
        entries = self._entries
        if self.max_records is not None and len(entries) >= self.max_records:
            self._evict_oldest()
        while entries and self.bytes + size > self.max_bytes:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        """Make room. A spooled record joins the disk range (past a gap of records dropped while the
        spool fell behind); one already handed to the sender counts as dropped only if it is never
        confirmed."""
        seq, _, mark = self._entries.popleft()
        self.bytes = self._marked - mark
        if self.spool_backed and seq < self._first_unspooled and len(self._disk_gaps) < MAX_DISK_GAPS:
            if not self._disk_first:
                self._disk_first = seq
            elif seq > self._disk_last + 1:
                self._disk_gaps.append([self._disk_last + 1, seq - 1])
                self._disk_gap_total += seq - 1 - self._disk_last
            self._disk_last = seq
        elif seq < self._first_unsent:
            self._evicted_in_flight.append(seq)
        else:
            self._count_dropped(1)

    def _count_dropped(self, count: int) -> None:
        self._dropped_unreported += count
        self.dropped_total += count

    def _has_unsent(self) -> bool:
        if self._disk_first and self._first_unsent <= self._disk_last:
            return True
        return bool(self._entries) and self._entries[-1][0] >= self._first_unsent

    def _disk_count(self) -> int:
        return self._disk_last - self._disk_first + 1 - self._disk_gap_total if self._disk_first else 0

    def _take_from_disk(self, max_bytes: int) -> List[Queued]:
        """Seqs of the disk range for the sender to read from the spool, about max_bytes of small records."""
        start = max(self._first_unsent, self._disk_first)
        stop = min(self._disk_last, start + max(1, max_bytes // DISK_RECORD_GUESS) - 1)
        for first, last in self._disk_gaps:
            if first <= start <= last:
                start = last + 1
                stop = min(self._disk_last, start + max(1, max_bytes // DISK_RECORD_GUESS) - 1)
            elif start < first <= stop:
                stop = first - 1
                break
        self._first_unsent = stop + 1
        return [(seq, None, 0) for seq in range(start, stop + 1)]

    def _shrink_disk(self, last_seq: int) -> None:
        """Everything up to `last_seq` has left the disk range."""
        if last_seq >= self._disk_last:
            self._disk_first = self._disk_last = self._disk_gap_total = 0
            self._disk_gaps.clear()
            return
        self._disk_first = last_seq + 1
        gaps = self._disk_gaps
        while gaps and gaps[0][0] <= self._disk_first:
            first, last = gaps[0]
            if last < self._disk_first:
                self._disk_gap_total -= last - first + 1
                gaps.popleft()
            else:  # it starts inside a gap: the range starts after it
                self._disk_gap_total -= last - first + 1
                gaps.popleft()
                self._disk_first = last + 1

    def _ring(self) -> None:
        try:
            self._bell.release()
        except RuntimeError:
            pass  # already rung: the sender has a wake-up pending


def _end_within(entries: Deque[Queued], start: int, stop: int, limit: int) -> int:
    """The end of the longest run from `start` (before `stop`, at least one record) whose marks stay
    within `limit`: a binary search, so that taking a batch costs nothing per record it leaves."""
    low, high = start + 1, stop
    while low < high:
        middle = (low + high + 1) // 2
        if entries[middle - 1][2] <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def _pop_left(entries: Deque[Any], count: int) -> None:
    """Remove the first `count` entries; a deque has no call for it, so the loop runs in C."""
    if count >= len(entries):
        entries.clear()
    else:
        deque(itertools.starmap(entries.popleft, itertools.repeat((), count)), maxlen=0)
