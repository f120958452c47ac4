"""The acknowledgement journal on disk: its lines, and the marks they leave after a crash.

One line each: `S <snapshot>` (every client id's mark), `I <intent>` (a
pass's files with their sizes before and after its write, and the seqs in
them) and `C` or `C <files not written>` (the pass's commit). acks.py keeps
the marks in memory and decides what to journal; the bytes, the torn-line
handling and the recovery that reads them back live here, in one place.
"""

import json
import logging
import os
from typing import Dict, Iterable, List, Optional

from loghogd import safefs
from loghogd.ackmarks import ClientMark
from loghogd.atomicfile import replace_file

log = logging.getLogger('loghogd')


class JournalFile:
    """The journal file, appended to line by line and rewritten whole as one snapshot."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self._torn = False
        self._fd: Optional[int] = None

    def append_intent(self, record: Dict[str, object], sync: bool) -> bool:
        return self._append(b'I ' + json.dumps(record, separators=(',', ':')).encode('ascii') + b'\n', sync)

    def append_commit(self, unwritten: List[str], sync: bool) -> bool:
        return self._append(b'C ' + json.dumps(unwritten).encode('ascii') + b'\n' if unwritten else b'C\n', sync)

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
        self.size += written
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

    def write_snapshot(self, marks: Dict[str, ClientMark]) -> None:
        """Replace the journal with one snapshot of `marks`; on failure it keeps growing until this works."""
        snapshot = {client_id: [mark.high, sorted(mark.gaps), mark.seen, mark.owner]
                    for client_id, mark in marks.items()}
        data = b'S ' + json.dumps(snapshot, separators=(',', ':')).encode('ascii') + b'\n'
        try:
            replace_file(self.path, data, durable=True)
        except OSError as error:
            log.error('cannot compact the acknowledgement journal %s: %s; it grows until it can', self.path, error)
            return
        self.close()
        self.size = len(data)
        self._torn = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def recover_marks(path: str, logdir: Optional[str]) -> Dict[str, ClientMark]:
    """The marks the journal at `path` holds, a last intent without its commit checked against the files."""
    try:
        with open(path, 'rb') as stream:
            lines = stream.read().split(b'\n')
    except FileNotFoundError:
        lines = []
    marks: Dict[str, ClientMark] = {}
    intent = None
    for line in lines:
        if line.startswith(b'S '):
            marks = _load_snapshot(json.loads(line[2:]))
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
            _apply(marks, intent, logdir, verify=False, unwritten=unwritten)
            intent = None
    if intent is not None:
        _apply(marks, intent, logdir, verify=True)
    return marks


def _load_snapshot(snapshot: Dict[str, list]) -> Dict[str, ClientMark]:
    """Each entry is [high, gaps, seen, owner]; journals before owners had no owner (bound on next use)."""
    return {client_id: ClientMark(*entry[:4]) for client_id, entry in snapshot.items()}


def _apply(marks: Dict[str, ClientMark], intent: Dict[str, object], logdir: Optional[str], verify: bool,
           unwritten: Iterable[str] = ()) -> None:
    seen = intent.get('time', 0.0)
    owners = intent.get('owners', {})
    written = [intent.get('handled', {})]
    lost = []
    for path, (before, after, ranges) in intent.get('files', {}).items():
        if path in unwritten or (verify and not _complete_or_truncated(logdir, path, before, after)):
            lost.append(ranges)
        else:
            written.append(ranges)
    for group in written:
        for client_id, ranges in group.items():
            mark = marks.setdefault(client_id, ClientMark())
            mark.owner = mark.owner or owners.get(client_id, '')
            mark.seen = max(mark.seen, seen)
            for first, last in ranges:
                mark.add(last)
                if mark.gaps:
                    mark.gaps.difference_update(range(first, last + 1))
    for group in lost:
        for client_id, ranges in group.items():
            mark = marks.setdefault(client_id, ClientMark())
            mark.owner = mark.owner or owners.get(client_id, '')
            mark.forget([seq for first, last in ranges for seq in range(first, last + 1)])


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
