"""The handler's bounded queue of encoded frames, shared by the caller and the sender thread.

Records leave the queue only when the sender confirms them, not when it takes
them: plain mode confirms once the kernel has accepted the bytes, and an
acknowledged mode (PROTOCOL.md extension 1.1) can confirm only what an ACK
covers, with no change here. Each record carries a sequence number so that
both modes can say "everything up to seq N is done".
"""

import itertools
import threading
from collections import deque
from typing import Callable, Deque, List, Optional, Tuple

Entry = Tuple[int, bytes]
"""(seq, frame): seq rises by one per record pushed, starting at 1."""


class Outbox:
    """A FIFO with room for `capacity` records; when full the oldest is dropped and counted.

    push() is the only call the application thread makes: one short lock, no
    I/O. Waking the sender costs a lock release, and only when it is idle.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError('max_buffer_size must be at least 1, not %r' % (capacity,))
        self.capacity = capacity
        self.dropped_total = 0
        self._entries: Deque[Entry] = deque()
        self._lock = threading.RLock()  # a signal handler that logs may interrupt push() in the same thread
        self._next_seq = 1
        self._first_unsent = 1
        self._dropped_unreported = 0
        self._evicted_in_flight: Deque[int] = deque()
        self._sender_idle = False
        self._bell = threading.Lock()
        self._bell.acquire()

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, frame: bytes) -> None:
        """Queue one frame, dropping the oldest record when the queue is full."""
        with self._lock:
            ring = self._append(frame)
        if ring:
            self._ring()

    def push_numbered(self, make_frame: Callable[[int], bytes]) -> None:
        """Queue the frame `make_frame` builds for the record's seq (acknowledged mode carries it)."""
        with self._lock:
            ring = self._append(make_frame(self._next_seq))
        if ring:
            self._ring()

    def has_unsent(self) -> bool:
        with self._lock:
            return self._has_unsent()

    def last_in_flight(self) -> int:
        """The seq of the newest record handed out and not yet confirmed; 0 when there is none."""
        with self._lock:
            entries = self._entries
            if self._evicted_in_flight or (entries and entries[0][0] < self._first_unsent):
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

    def take_unsent(self, max_bytes: int) -> List[Entry]:
        """The oldest records not yet handed out, at least one and about `max_bytes` in all.

        They stay queued until confirm() covers them or rewind() hands them out again.
        """
        with self._lock:
            entries = self._entries
            if not entries:
                return []
            start = max(self._first_unsent - entries[0][0], 0)
            batch: List[Entry] = []
            size = 0
            for entry in itertools.islice(entries, start, None):
                if batch and size + len(entry[1]) > max_bytes:
                    break
                batch.append(entry)
                size += len(entry[1])
            if batch:
                self._first_unsent = batch[-1][0] + 1
            return batch

    def confirm(self, last_seq: int) -> None:
        """Remove every record up to and including `last_seq`: it is delivered (or given up on)."""
        with self._lock:
            entries = self._entries
            while entries and entries[0][0] <= last_seq:
                entries.popleft()
            evicted = self._evicted_in_flight
            while evicted and evicted[0] <= last_seq:
                evicted.popleft()
            if self._first_unsent <= last_seq:
                self._first_unsent = last_seq + 1

    def rewind(self) -> None:
        """Hand out every unconfirmed record again, oldest first (after a lost connection)."""
        with self._lock:
            self._first_unsent = self._entries[0][0] if self._entries else self._next_seq
            self._count_dropped(len(self._evicted_in_flight))
            self._evicted_in_flight.clear()

    def discard(self) -> int:
        """Give up on every record not yet confirmed (at close); return how many, counted as dropped."""
        with self._lock:
            count = len(self._entries) + len(self._evicted_in_flight)
            self._entries.clear()
            self._evicted_in_flight.clear()
            self._first_unsent = self._next_seq
            self._count_dropped(count)
            return count

    def _append(self, frame: bytes) -> bool:
        """Add under the lock; True when the sender is idle and must be woken."""
        entries = self._entries
        if len(entries) >= self.capacity:
            self._evict_oldest()
        entries.append((self._next_seq, frame))
        self._next_seq += 1
        ring = self._sender_idle
        self._sender_idle = False
        return ring

    def _evict_oldest(self) -> None:
        """Make room. A record already handed to the sender counts as dropped only if it is never confirmed."""
        seq, _ = self._entries.popleft()
        if seq < self._first_unsent:
            self._evicted_in_flight.append(seq)
        else:
            self._count_dropped(1)

    def _count_dropped(self, count: int) -> None:
        self._dropped_unreported += count
        self.dropped_total += count

    def _has_unsent(self) -> bool:
        return bool(self._entries) and self._entries[-1][0] >= self._first_unsent

    def _ring(self) -> None:
        try:
            self._bell.release()
        except RuntimeError:
            pass  # already rung: the sender has a wake-up pending
