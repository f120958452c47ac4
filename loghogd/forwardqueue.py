"""The edge's bounded queue on disk: records on their way to JetStream.

Every forwarded record is appended here before its client's records are
journaled as handled, and leaves only when JetStream has acknowledged it,
so a kill -9 of the edge loses nothing: what was not acknowledged is
published again at the next start (JetStream drops the copies it already
has by their message id). While the stream is unreachable records wait
here, bounded by `max_bytes`, and then flow out in the order they came.

The file is `<workdir>/forward-queue`: a header line naming the logical
offset of its first entry, then one entry per line, `<message id> TAB
<subject> TAB <record JSON>`. `forward-queue.acked` holds the logical
offset below which everything is acknowledged. When the acknowledged
part is large, the file is rewritten with only the rest.
"""

import collections
import errno
import logging
import os
import re
from typing import Deque, Iterator, List, Optional, Set, Tuple

from loghogd import safefs
from loghogd.atomicfile import replace_file

log = logging.getLogger('loghogd')

QUEUE_NAME = 'forward-queue'
ACKED_SUFFIX = '.acked'
HEADER_FORMAT = b'loghogd-forward-queue %020d\n'
HEADER_SIZE = len(HEADER_FORMAT % 0)
_HEADER = re.compile(rb'loghogd-forward-queue ([0-9]{20})\n\Z')
READ_BYTES = 64 * 1024
COMPACT_BYTES = 16 * 1024 * 1024

Entry = Tuple[int, bytes]
"""(logical end offset, the line without its newline): the end offset names the entry."""


class ForwardQueue:
    """Append at the end, hand out from a cursor, forget the acknowledged prefix."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.path = os.path.join(directory, QUEUE_NAME)
        self.acked_path = self.path + ACKED_SUFFIX
        self.max_bytes = max_bytes
        self.base = 0
        self.size = 0
        self.acked = 0
        self.cursor = 0
        self._saved = -1
        self._buffer: List[bytes] = []
        self._buffered = 0
        self.refused: Optional[OSError] = None
        self._handed: Deque[int] = collections.deque()
        self._done: Set[int] = set()
        self._fd = self._open()

    @property
    def pending_bytes(self) -> int:
        """Bytes of records not yet acknowledged by JetStream."""
        return self.size + self._buffered - self.acked

    @property
    def waiting(self) -> bool:
        """Entries not yet handed out for publishing."""
        return self.cursor < self.size

    def append(self, message_id: str, subject: str, payload: bytes) -> bool:
        """Queue one record; False when the queue holds max_bytes already."""
        line = b'%s\t%s\t%s\n' % (message_id.encode('ascii'), subject.encode('ascii'), payload)
        if self.size + self._buffered - self.acked + len(line) > self.max_bytes:
            return False
        self._buffer.append(line)
        self._buffered += len(line)
        return True

    def flush(self) -> List[bytes]:
        """Write what `append` buffered (once per read of a client); the lines the disk refused, if it did."""
        if not self._buffer:
            return []
        data = b''.join(self._buffer)
        lines, self._buffer, self._buffered = self._buffer, [], 0
        try:
            written = os.write(self._fd, data)
            if written < len(data):
                os.ftruncate(self._fd, self._physical(self.size))
                raise OSError(errno.ENOSPC, 'short write')
        except OSError as error:
            self.refused = error
            return lines
        self.size += len(data)
        return []

    def take(self, limit: int) -> List[Entry]:
        """Up to `limit` entries after the cursor, in order; each must be `done` later."""
        entries: List[Entry] = []
        while len(entries) < limit and self.cursor < self.size:
            chunk = os.pread(self._fd, min(READ_BYTES, self.size - self.cursor), self._physical(self.cursor))
            if b'\n' not in chunk:
                chunk = os.pread(self._fd, self.size - self.cursor, self._physical(self.cursor))
            start = 0
            while len(entries) < limit:
                end = chunk.find(b'\n', start)
                if end < 0:
                    break
                entries.append((self.cursor + end + 1, chunk[start:end]))
                self._handed.append(self.cursor + end + 1)
                start = end + 1
            self.cursor += start
        return entries

    def pending_ids(self) -> Iterator[str]:
        """The message ids of every entry not acknowledged yet, in order (read at start-up)."""
        offset = self.acked
        while offset < self.size:
            chunk = os.pread(self._fd, min(READ_BYTES, self.size - offset), self._physical(offset))
            end = chunk.rfind(b'\n')
            if end < 0:
                chunk = os.pread(self._fd, self.size - offset, self._physical(offset))
                end = chunk.rfind(b'\n')
            for line in chunk[:end].split(b'\n'):
                yield line.split(b'\t', 1)[0].decode('ascii', 'replace')
            offset += end + 1

    def done(self, end: int) -> None:
        """JetStream has the entry ending at `end`: the acknowledged prefix may grow."""
        self._done.add(end)
        handed, finished = self._handed, self._done
        while handed and handed[0] in finished:
            finished.discard(handed[0])
            self.acked = handed.popleft()

    def rewind(self) -> None:
        """Hand out again everything not acknowledged (the link lost what it held)."""
        self._handed.clear()
        self._done.clear()
        self.cursor = self.acked

    def save(self) -> None:
        """Record the acknowledged offset; rewrite the file when its acknowledged part is large."""
        if self.acked == self._saved:
            return
        if self.acked - self.base >= COMPACT_BYTES and self.size - self.acked <= COMPACT_BYTES // 4:
            self._compact()
        replace_file(self.acked_path, b'%d\n' % self.acked)
        self._saved = self.acked

    def close(self) -> None:
        self.flush()
        self.save()
        os.close(self._fd)

    def _physical(self, logical: int) -> int:
        return logical - self.base + HEADER_SIZE

    def _open(self) -> int:
        fd = self._open_file(os.O_CREAT)
        if os.fstat(fd).st_size == 0:
            os.write(fd, HEADER_FORMAT % 0)
        header = os.pread(fd, HEADER_SIZE, 0)
        match = _HEADER.match(header)
        if match is None:
            os.close(fd)
            aside = self.path + '.unreadable'
            os.replace(self.path, aside)
            log.error('%s is not a forward queue; moved it to %s and started an empty one', self.path, aside)
            return self._open()
        self.base = int(match.group(1))
        length = os.fstat(fd).st_size - HEADER_SIZE
        tail = os.pread(fd, min(length, READ_BYTES), HEADER_SIZE + length - min(length, READ_BYTES))
        if length and not tail.endswith(b'\n'):
            cut = tail.rfind(b'\n') + 1 + length - len(tail)
            log.warning('%s: removed a record cut short by a crash (%d bytes)', self.path, length - cut)
            os.ftruncate(fd, HEADER_SIZE + cut)
            length = cut
        self.size = self.base + length
        self.acked = self.cursor = min(max(self._read_acked(), self.base), self.size)
        self._saved = self.acked
        if self.size > self.acked:
            log.info('%s: %d bytes of records wait to be forwarded', self.path, self.size - self.acked)
        return fd

    def _open_file(self, flags: int = 0) -> int:
        """The queue file, reached without following a link (the work directory is the daemon user's)."""
        return safefs.open_file(self.directory, self.path, os.O_RDWR | os.O_APPEND | flags)

    def _read_acked(self) -> int:
        try:
            fd = safefs.open_file(self.directory, self.acked_path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            return int(os.read(fd, 32).strip() or b'0')
        except ValueError:
            return 0
        finally:
            os.close(fd)

    def _compact(self) -> None:
        tail = os.pread(self._fd, self.size - self.acked, self._physical(self.acked))
        replace_file(self.path, HEADER_FORMAT % self.acked + tail, durable=True)
        os.close(self._fd)
        self._fd = self._open_file()
        self.base = self.acked
