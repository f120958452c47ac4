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

A file that cannot be written (disk full) keeps its lines in the writer's
memory buffer, and its records are not handled yet: the commit mark names
it, its sequence numbers ride along into the next pass's intent, and no ACK
covers them until a write lands. Lines the full buffer had to drop are owed:
the client is disconnected so that it resends them, and they are written
when they come back.
"""

import json
import logging
import os
import re
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from loghogd import safefs
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
        """After a crash or a failed write: these were not written; the highest falls back below them."""
        self.gaps.update(seq for seq in seqs if seq <= self.high)
        while self.high in self.gaps:
            self.gaps.discard(self.high)
            self.high -= 1
        if len(self.gaps) > MAX_GAPS:
            self.gaps = set(sorted(self.gaps)[-MAX_GAPS:])


class AckJournal:
    """Marks per client_id, and the journal that makes them survive a crash."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time, logdir: Optional[str] = None) -> None:
        self.path = path
        self.logdir = logdir
        self.clock = clock
        self.marks: Dict[str, ClientMark] = {}
        self._files: Dict[LogFile, Dict[str, Ranges]] = {}
        self._drops_at_intent: Dict[LogFile, int] = {}
        self._without_file: Dict[str, Ranges] = {}
        self._owed: Dict[str, Ranges] = {}
        self._caps: Dict[str, int] = {}
        self._intent_journaled = True
        self._torn = False
        self._fd: Optional[int] = None
        self._size = 0
        self._recover()

    # what the processor asks -------------------------------------------------

    def is_duplicate(self, client_id: str, seq: int) -> bool:
        mark = self.marks.get(client_id)
        if mark is None or not mark.handled(seq):
            return False
        return client_id not in self._owed or not _in_ranges(self._owed[client_id], seq)

    def highest(self, client_id: str) -> int:
        """The seq to acknowledge: the highest handled, below any record still waiting for the disk."""
        mark = self.marks.get(client_id)
        high = mark.high if mark is not None else 0
        cap = self._caps.get(client_id)
        return high if cap is None else min(high, cap)

    def waiting_for_disk(self, client_id: str) -> bool:
        """Some records of `client_id` are held or owed: its ACK is due once they are written."""
        return client_id in self._caps

    def note(self, client_id: str, seq: int, logfile: Optional[LogFile]) -> None:
        """`seq` is handled: queued for `logfile`, or rejected when that is None."""
        mark = self.marks.get(client_id)
        if mark is None:
            if len(self.marks) >= MAX_CLIENTS:
                self._forget_least_recent()
            mark = self.marks[client_id] = ClientMark()
        mark.add(seq)
        mark.seen = self.clock()
        owed = self._owed.get(client_id)
        if owed is not None and _in_ranges(owed, seq):
            _remove_from_ranges(owed, seq)
            if not owed:
                del self._owed[client_id]
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
        self._drops_at_intent = {logfile: logfile.drops for logfile in self._files}
        record = {'time': self.clock(), 'files': files, 'handled': self._without_file}
        self._intent_journaled = self._append(
            b'I ' + json.dumps(record, separators=(',', ':')).encode('ascii') + b'\n', sync)

    def commit(self) -> List[str]:
        """After the pass's write: the intent holds for every file written in full.

        The commit mark names the files that were not: one still holding
        lines keeps its records for the next pass; the records of one whose
        held lines were dropped become owed. Returns the client ids with
        newly owed records, which must resend them.
        """
        sync = any(logfile.facility.sync for logfile in self._files)
        waiting: Dict[LogFile, Dict[str, Ranges]] = {}
        unwritten: List[str] = []
        dropped: List[str] = []
        journaled = self._intent_journaled
        for logfile, ranges in self._files.items():
            if self._dropped_since_intent(logfile):
                for client_id, seqs in ranges.items():
                    owed = self._owed.setdefault(client_id, [])
                    for first, last in seqs:
                        _add_range(owed, first, last)
                    dropped.append(client_id)
            elif logfile.pending or logfile.unwritten or not journaled:
                waiting[logfile] = ranges
            else:
                continue
            unwritten.append(logfile.path)
        if journaled and self._append(b'C ' + json.dumps(unwritten).encode('ascii') + b'\n' if unwritten
                                      else b'C\n', sync):
            self._without_file = {}
        elif journaled:
            waiting = {logfile: ranges for logfile, ranges in self._files.items()
                       if not self._dropped_since_intent(logfile)}
        self._files = waiting
        if self._caps or waiting or self._without_file or dropped:
            self._caps = self._acknowledgeable()
        if self._size > COMPACT_BYTES and not self._caps:
            self._compact()
        return dropped

    def _dropped_since_intent(self, logfile: LogFile) -> bool:
        return logfile.drops != self._drops_at_intent.get(logfile, logfile.drops)

    def _acknowledgeable(self) -> Dict[str, int]:
        """Per client with records held or owed, the highest seq below all of them."""
        lowest: Dict[str, int] = {}
        for group in [*self._files.values(), self._without_file, self._owed]:
            for client_id, ranges in group.items():
                first = min(first for first, _last in ranges)
                lowest[client_id] = min(lowest.get(client_id, first), first)
        return {client_id: first - 1 for client_id, first in lowest.items()}

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # the journal file ----------------------------------------------------------

    def _append(self, data: bytes, sync: bool) -> bool:
        """Append one line; False when the disk refuses it (nothing is acknowledged until it takes one).

        After a refused or short write the next line starts with a newline,
        so that the torn one stands alone and recovery skips it.
        """
        line = b'\n' + data if self._torn else data
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            written = os.write(self._fd, line)
            if sync and written == len(line):
                os.fsync(self._fd)
            reason = 'short write'
        except OSError as error:
            written, reason = 0, error.strerror or str(error)
        self._size += written
        if written < len(line):
            if not self._torn:
                log.error('cannot write the acknowledgement journal %s: %s; acknowledging nothing until it can',
                          self.path, reason)
            self._torn = True
            return False
        if self._torn:
            log.info('the acknowledgement journal %s is writable again', self.path)
            self._torn = False
        return True

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
            elif line.startswith(b'C') and intent is not None:
                try:
                    unwritten = json.loads(line[2:]) if len(line) > 1 else []
                except ValueError:
                    continue
                self._apply(intent, verify=False, unwritten=unwritten)
                intent = None
        if intent is not None:
            self._apply(intent, verify=True)
        self._compact()

    def _load_snapshot(self, snapshot: Dict[str, list]) -> None:
        self.marks = {client_id: ClientMark(high, gaps, seen) for client_id, (high, gaps, seen) in snapshot.items()}

    def _apply(self, intent: Dict[str, object], verify: bool, unwritten: Iterable[str] = ()) -> None:
        seen = intent.get('time', 0.0)
        written = [intent.get('handled', {})]
        lost = []
        for path, (before, after, ranges) in intent.get('files', {}).items():
            if path in unwritten or (verify and not _complete_or_truncated(self.logdir, path, before, after)):
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
        try:
            replace_file(self.path, data, durable=True)
        except OSError as error:
            log.error('cannot compact the acknowledgement journal %s: %s; it grows until it can', self.path, error)
            return
        self.close()
        self._size = len(data)
        self._torn = False

    def _forget_least_recent(self) -> None:
        oldest = sorted(self.marks.items(), key=lambda item: item[1].seen)[:len(self.marks) // 10 or 1]
        for client_id, _mark in oldest:
            del self.marks[client_id]


def _in_ranges(ranges: Ranges, seq: int) -> bool:
    return any(first <= seq <= last for first, last in ranges)


def _add_range(ranges: Ranges, first: int, last: int) -> None:
    """Add [first, last] to sorted, disjoint runs, merging the runs it touches."""
    merged: Ranges = []
    for run in sorted(ranges + [[first, last]]):
        if merged and run[0] <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], run[1])
        else:
            merged.append(list(run))
    ranges[:] = merged


def _remove_from_ranges(ranges: Ranges, seq: int) -> None:
    for index, (first, last) in enumerate(ranges):
        if first <= seq <= last:
            ranges[index:index + 1] = [run for run in ([first, seq - 1], [seq + 1, last]) if run[0] <= run[1]]
            return


def _complete_or_truncated(logdir: Optional[str], path: str, before: int, after: int) -> bool:
    """True when a crash spared the whole write; else cut the partial one off.

    The journal lies in a directory loghogd's user can write, so the path it
    names is trusted only as a regular file below the log directory, reached
    without following a link (loghogd/safefs.py).
    """
    root = logdir or os.path.dirname(path)
    try:
        if not safefs.beneath(root, path):
            raise safefs.UnsafePath(path, 'a path outside %s' % root, 'log file')
        fd = safefs.open_file(root, path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    except OSError as error:
        log.error('the acknowledgement journal names %s: %s; not touching it (its records will be resent)',
                  path, error.strerror or error)
        return False
    try:
        size = os.fstat(fd).st_size
        if size >= after:
            return True
        if size > before:
            os.ftruncate(fd, before)
            log.warning('%s: a crash cut a write short; removed its %d partial bytes (they will be resent)',
                        path, size - before)
    finally:
        os.close(fd)
    return False


def parse_ack_fields(message: Dict[str, object]) -> Tuple[Optional[str], Optional[int]]:
    """client_id and seq of an ACK_REQUEST message, or (None, None) when they are invalid."""
    client_id = message.get('client_id')
    seq = message.get('seq')
    if type(client_id) is not str or not CLIENT_ID.match(client_id) or type(seq) is not int or not 0 < seq < 2 ** 63:
        return None, None
    return client_id, seq
