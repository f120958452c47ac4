"""The disk spool: records appended to files before they are sent, so they outlive the process.

Layout in `spool_dir`, per handler (client_id): `<client_id>.lock`, held
with flock() while the process lives and holding the highest acknowledged
seq (8 bytes) then the JSON object {"app_id": ..., "hostname": ...} the
records are from, and segments `<client_id>.<n>.spool`, each a run of records
`seq (u64) | length (u32) | crc32 of all that precedes and the data (u32) | data`,
the data being the record's fields (loghog.fields.spool_bytes), so that
whoever sends them encodes them for the server it finds (a version 1 frame
or a protocol 1.2 batch). A segment is deleted once
an ACK covers its last record; a torn or corrupt tail (the process died in
a write) ends a segment. A process that can lock another client_id's lock
file owns the spool of a process that died and sends it under that
client_id, so the server drops what had already arrived.

Writes go to the page cache with no fsync except when a segment is full:
the spool survives the application's death, not the machine's.
"""

import json
import os
import re
import struct
import zlib
from typing import Dict, Iterator, List, Optional, Tuple

try:
    import fcntl
except ImportError:  # Windows: no flock(), so no spool (the handler refuses spool_dir there)
    fcntl = None  # type: ignore[assignment]

RECORD = struct.Struct('!QLL')
HEAD = struct.Struct('!QL')
ACKED = struct.Struct('!Q')
SEGMENT_BYTES = 1024 * 1024
MAX_SPOOLED_RECORD = 64 * 1024 * 1024
MAX_ORIGIN = 64 * 1024
SEGMENT_NAME = re.compile(r'([A-Za-z0-9_-]{1,64})\.(\d{1,12})\.spool\Z')
LOCK_NAME = re.compile(r'([A-Za-z0-9_-]{1,64})\.lock\Z')

Item = Tuple[int, bytes]
"""(seq, the record's data)."""


def spool_supported() -> bool:
    return fcntl is not None


class Spool:
    """This handler's own spool: append before send, delete what is acknowledged, bounded in bytes."""

    def __init__(self, directory: str, client_id: str, max_bytes: int, app_id: str = '', hostname: str = '') -> None:
        self.directory = directory
        self.client_id = client_id
        self.max_bytes = max_bytes
        self.origin = json.dumps({'app_id': app_id, 'hostname': hostname}).encode('utf-8', 'replace')
        self.unprotected_total = 0  # records whose segment went to keep the spool under max_bytes
        self.lost_upto = 0  # the last seq of the newest segment that went that way
        self._cache: Tuple[int, int, Dict[int, bytes]] = (0, 0, {})  # (segment number, its bytes, its items)
        self._lock_fd: Optional[int] = None
        self._segments: List[List] = []  # [number, last seq, bytes, records] of each segment, oldest first
        self._current: Optional[int] = None
        self._bytes = 0

    def append(self, items: List[Item]) -> None:
        """Write the items at the end of the current segment, in one write()."""
        if not items:
            return
        if self._lock_fd is None:
            self._open_lock()
        data = b''.join(_record(seq, item) for seq, item in items)
        if self._current is None or self._segments[-1][2] >= SEGMENT_BYTES:
            self._start_segment()
        while self._bytes + len(data) > self.max_bytes and len(self._segments) > 1:
            self._drop_oldest_segment()
        os.write(self._current, data)
        segment = self._segments[-1]
        segment[1] = items[-1][0]
        segment[2] += len(data)
        segment[3] += len(items)
        self._bytes += len(data)

    def confirm(self, last_seq: int) -> None:
        """Records up to `last_seq` are acknowledged: note it and delete the segments they fill."""
        if self._lock_fd is None:
            return
        os.pwrite(self._lock_fd, ACKED.pack(last_seq), 0)
        while len(self._segments) > 1 and self._segments[0][1] <= last_seq:
            self._delete_segment(self._segments.pop(0))

    def read(self, first: int, last: int) -> Dict[int, bytes]:
        """The items of seqs `first` to `last` that the spool holds (records no longer in memory)."""
        found: Dict[int, bytes] = {}
        for number, last_seq, size, _ in self._segments:
            if last_seq < first:
                continue
            if self._cache[:2] != (number, size):
                path = self._path('%s.%d.spool' % (self.client_id, number))
                self._cache = (number, size, dict(read_segment(path, 0)))
            items = self._cache[2]
            found.update((seq, items[seq]) for seq in range(first, last + 1) if seq in items)
            if last_seq >= last:
                break
        return found

    def remove(self) -> None:
        """Everything is acknowledged (or given up): delete every file and unlock."""
        if self._lock_fd is None:
            return
        self._close_current()
        for segment in self._segments:
            self._delete_segment(segment)
        self._segments = []
        _unlink(self._path('%s.lock' % self.client_id))
        os.close(self._lock_fd)
        self._lock_fd = None

    def release(self) -> None:
        """Leave the files for the next process with this spool_dir, and unlock them."""
        self._close_current()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def forget(self) -> None:
        """In a forked child: close the inherited descriptors; the files stay the parent's."""
        for fd in (self._current, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._current = self._lock_fd = None
        self._segments = []

    def _open_lock(self) -> None:
        """Lock the file before it has its name, so no other process ever sees it unlocked."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        temporary = self._path('.%s.lock.new' % self.client_id)
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, ACKED.pack(0) + self.origin)
        os.rename(temporary, self._path('%s.lock' % self.client_id))
        self._lock_fd = fd

    def _start_segment(self) -> None:
        number = self._segments[-1][0] + 1 if self._segments else 1
        if self._current is not None:
            os.fsync(self._current)
            self._close_current()
        self._current = os.open(self._path('%s.%d.spool' % (self.client_id, number)),
                                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._segments.append([number, 0, 0, 0])

    def _close_current(self) -> None:
        if self._current is not None:
            os.close(self._current)
            self._current = None

    def _drop_oldest_segment(self) -> None:
        segment = self._segments.pop(0)
        self.unprotected_total += segment[3]
        self.lost_upto = segment[1]
        self._delete_segment(segment)

    def _delete_segment(self, segment: List) -> None:
        self._bytes -= segment[2]
        _unlink(self._path('%s.%d.spool' % (self.client_id, segment[0])))

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)


class Orphan:
    """The spool of a process that died, locked by this one until it is delivered or released."""

    def __init__(self, directory: str, client_id: str, lock_fd: int) -> None:
        self.directory = directory
        self.client_id = client_id
        self._lock_fd = lock_fd

    def acknowledged(self) -> int:
        data = os.pread(self._lock_fd, ACKED.size, 0)
        return ACKED.unpack(data)[0] if len(data) == ACKED.size else 0

    def origin(self) -> Optional[Tuple[str, str]]:
        """(app_id, hostname) its records are from; None when the lock file does not say."""
        try:
            origin = json.loads(os.pread(self._lock_fd, MAX_ORIGIN, ACKED.size).decode('utf-8'))
        except ValueError:
            return None
        if type(origin) is not dict or type(origin.get('app_id')) is not str \
                or type(origin.get('hostname')) is not str:
            return None
        return origin['app_id'], origin['hostname']

    def segments(self) -> List[str]:
        """Paths of its segments, oldest first."""
        found = []
        for name in _listdir(self.directory):
            match = SEGMENT_NAME.match(name)
            if match and match.group(1) == self.client_id:
                found.append((int(match.group(2)), os.path.join(self.directory, name)))
        return [path for _, path in sorted(found)]

    def note_acknowledged(self, seq: int) -> None:
        os.pwrite(self._lock_fd, ACKED.pack(seq), 0)

    def finish(self) -> None:
        """Delivered: delete its files."""
        for path in self.segments():
            _unlink(path)
        _unlink(os.path.join(self.directory, '%s.lock' % self.client_id))
        self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def read_segment(path: str, after_seq: int) -> List[Item]:
    """The whole records of a segment with a seq above `after_seq`; a torn or corrupt tail ends it."""
    try:
        with open(path, 'rb') as stream:
            data = stream.read()
    except FileNotFoundError:
        return []
    items: List[Item] = []
    pos = 0
    while pos + RECORD.size <= len(data):
        seq, length, crc = RECORD.unpack_from(data, pos)
        end = pos + RECORD.size + length
        if length > MAX_SPOOLED_RECORD or end > len(data):
            break
        item = data[pos + RECORD.size:end]
        if zlib.crc32(item, zlib.crc32(HEAD.pack(seq, length))) != crc:
            break
        if seq > after_seq:
            items.append((seq, item))
        pos = end
    return items


def claim_orphans(directory: str, own_client_id: str) -> Iterator[Orphan]:
    """Each spool in `directory` whose process is gone, locked for this process as it is yielded."""
    client_ids = set()
    for name in _listdir(directory):
        match = SEGMENT_NAME.match(name) or LOCK_NAME.match(name)
        if match and match.group(1) != own_client_id:
            client_ids.add(match.group(1))
    for client_id in sorted(client_ids):
        path = os.path.join(directory, '%s.lock' % client_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)  # delivered and removed by another process meanwhile
        except OSError:
            os.close(fd)  # its process is alive (or another one has claimed it)
            continue
        yield Orphan(directory, client_id, fd)


def _record(seq: int, item: bytes) -> bytes:
    head = HEAD.pack(seq, len(item))
    return RECORD.pack(seq, len(item), zlib.crc32(item, zlib.crc32(head))) + item


def _listdir(directory: str) -> List[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
