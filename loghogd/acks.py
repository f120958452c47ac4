"""Acknowledged delivery (protocol 1.1): which records each client_id has had handled.

The journal in the workdir gets, for every loop pass that handled
acknowledged records, an intent (each log file's size before and after the
pass's write, and the sequence numbers in it) before the log files are
written, and a commit mark after. At start-up, a last intent without its
commit is checked against the files: a file that holds all its bytes is
kept, one cut short is truncated back to where the pass began, and only the
sequence numbers of complete files count as handled. A client resends what
was not acknowledged, so each record is written exactly once whatever moment
a kill -9 hits.
"""

import json
import logging
import os
import re
import time
from typing import Callable, Dict, List, Optional, Tuple

from loghogd.atomicfile import replace_file
from loghogd.writer import LogFile

log = logging.getLogger('loghogd')

CLIENT_ID = re.compile(r'[A-Za-z0-9_-]{1,64}\Z')
IDLE_SECONDS = 7 * 86400
MAX_GAPS = 1024
MAX_CLIENTS = 100000
COMPACT_BYTES = 8 * 1024 * 1024
JOURNAL_NAME = 'ack-journal'

Ranges = List[List[int]]


def add_to_ranges(ranges: Ranges, seq: int) -> None:
    """Append `seq` to ascending [first, last] runs, growing the last run when it follows on."""
    if ranges and ranges[-1][1] + 1 == seq:
        ranges[-1][1] = seq
    else:
        ranges.append([seq, seq])


class ClientMark:
    """The highest handled seq of one client, and the few below it that were not.

    Gaps come only from a crash: records of a pass whose write was cut short
    while later records of the same pass reached another file. A client that
    skips numbers (it dropped records itself) leaves no gaps, so a peer cannot
    make loghogd remember more than MAX_GAPS numbers per client.
    """

    __slots__ = ('high', 'gaps', 'seen')

    def __init__(self, high: int = 0, gaps: Optional[List[int]] = None, seen: float = 0.0) -> None:
        self.high = high
        self.gaps = set(gaps or ())
        self.seen = seen

    def handled(self, seq: int) -> bool:
        return seq <= self.high and seq not in self.gaps

    def add(self, seq: int) -> None:
        if seq > self.high:
            self.high = seq
        else:
            self.gaps.discard(seq)

    def forget(self, seqs: List[int]) -> None:
        """After a crash: these were not written, although higher ones were."""
        self.gaps.update(seq for seq in seqs if seq < self.high)
        if len(self.gaps) > MAX_GAPS:
            self.gaps = set(sorted(self.gaps)[-MAX_GAPS:])


class AckJournal:
    """Marks per client_id, and the journal that makes them survive a crash."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.marks: Dict[str, ClientMark] = {}
        self._files: Dict[LogFile, Dict[str, Ranges]] = {}
        self._without_file: Dict[str, Ranges] = {}
        self._fd: Optional[int] = None
        self._size = 0
        self._recover()

    # what the processor asks -------------------------------------------------

    def is_duplicate(self, client_id: str, seq: int) -> bool:
        mark = self.marks.get(client_id)
        return mark is not None and mark.handled(seq)

    def highest(self, client_id: str) -> int:
        mark = self.marks.get(client_id)
        return mark.high if mark is not None else 0

    def note(self, client_id: str, seq: int, logfile: Optional[LogFile]) -> None:
        """`seq` is handled: queued for `logfile`, or rejected when that is None."""
        mark = self.marks.get(client_id)
        if mark is None:
            if len(self.marks) >= MAX_CLIENTS:
                self._forget_least_recent()
            mark = self.marks[client_id] = ClientMark()
        mark.add(seq)
        mark.seen = self.clock()
        batch = self._without_file if logfile is None else self._files.setdefault(logfile, {})
        add_to_ranges(batch.setdefault(client_id, []), seq)

    def high_water(self) -> Dict[str, int]:
        return {client_id: mark.high for client_id, mark in self.marks.items()}

    # around the writer's flush -----------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._files or self._without_file)

    def write_intent(self) -> None:
        """Before the pass's lines are written: where they go and what they hold."""
        files = {}
        sync = False
        for logfile, ranges in self._files.items():
            try:
                before, after = logfile.stage()
            except OSError:
                continue
            files[logfile.path] = [before, after, ranges]
            sync = sync or logfile.facility.sync
        record = {'time': self.clock(), 'files': files, 'handled': self._without_file}
        self._append(b'I ' + json.dumps(record, separators=(',', ':')).encode('ascii') + b'\n', sync)

    def commit(self) -> None:
        """After the pass's lines are written: the intent holds."""
        sync = any(logfile.facility.sync for logfile in self._files)
        self._files = {}
        self._without_file = {}
        self._append(b'C\n', sync)
        if self._size > COMPACT_BYTES:
            self._compact()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # the journal file ----------------------------------------------------------

    def _append(self, data: bytes, sync: bool) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        os.write(self._fd, data)
        self._size += len(data)
        if sync:
            os.fsync(self._fd)

    def _recover(self) -> None:
        try:
            with open(self.path, 'rb') as stream:
                lines = stream.read().split(b'\n')
        except FileNotFoundError:
            lines = []
        intent = None
        for line in lines:
            if line.startswith(b'S '):
                self._load_snapshot(json.loads(line[2:]))
            elif line.startswith(b'I '):
                try:
                    intent = json.loads(line[2:])
                except ValueError:
                    intent = None
            elif line == b'C' and intent is not None:
                self._apply(intent, verify=False)
                intent = None
        if intent is not None:
            self._apply(intent, verify=True)
        self._compact()

    def _load_snapshot(self, snapshot: Dict[str, list]) -> None:
        self.marks = {client_id: ClientMark(high, gaps, seen) for client_id, (high, gaps, seen) in snapshot.items()}

    def _apply(self, intent: Dict[str, object], verify: bool) -> None:
        seen = intent.get('time', 0.0)
        written = [intent.get('handled', {})]
        lost = []
        for path, (before, after, ranges) in intent.get('files', {}).items():
            if verify and not _complete_or_truncated(path, before, after):
                lost.append(ranges)
            else:
                written.append(ranges)
        for group in written:
            for client_id, ranges in group.items():
                mark = self.marks.setdefault(client_id, ClientMark())
                mark.seen = max(mark.seen, seen)
                for first, last in ranges:
                    mark.add(last)
                    if mark.gaps:
                        mark.gaps.difference_update(range(first, last + 1))
        for group in lost:
            for client_id, ranges in group.items():
                mark = self.marks.setdefault(client_id, ClientMark())
                mark.forget([seq for first, last in ranges for seq in range(first, last + 1)])

    def _compact(self) -> None:
        """Rewrite the journal as one snapshot, forgetting long-idle clients."""
        horizon = self.clock() - IDLE_SECONDS
        self.marks = {client_id: mark for client_id, mark in self.marks.items() if mark.seen >= horizon}
        snapshot = {client_id: [mark.high, sorted(mark.gaps), mark.seen] for client_id, mark in self.marks.items()}
        data = b'S ' + json.dumps(snapshot, separators=(',', ':')).encode('ascii') + b'\n'
        replace_file(self.path, data, durable=True)
        self.close()
        self._size = len(data)

    def _forget_least_recent(self) -> None:
        oldest = sorted(self.marks.items(), key=lambda item: item[1].seen)[:len(self.marks) // 10 or 1]
        for client_id, _mark in oldest:
            del self.marks[client_id]


def _complete_or_truncated(path: str, before: int, after: int) -> bool:
    """True when a crash spared the whole write; else cut the partial one off."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return False
    if size >= after:
        return True
    if size > before:
        os.truncate(path, before)
        log.warning('%s: a crash cut a write short; removed its %d partial bytes (they will be resent)',
                    path, size - before)
    return False


def parse_ack_fields(message: Dict[str, object]) -> Tuple[Optional[str], Optional[int]]:
    """client_id and seq of an ACK_REQUEST message, or (None, None) when they are invalid."""
    client_id = message.get('client_id')
    seq = message.get('seq')
    if type(client_id) is not str or not CLIENT_ID.match(client_id) or type(seq) is not int or not 0 < seq < 2 ** 63:
        return None, None
    return client_id, seq
