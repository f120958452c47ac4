"""One log file: opening it safely, and getting its queued lines onto the disk.

A file with a max_size costs one comparison per record: the size it had
when opened plus what was written since, against the record about to be
added. Before a record would pass max_size, what precedes it is written and
`on_full` (the rotator, loghogd/rotation.py) rotates the file, so a file
never passes max_size, except by a single record larger than max_size,
which then is its file's only content. Which file a line goes to, and when
the files are written, is the writer's (loghogd/writer.py).
"""

import os
from typing import Callable, List, Optional, Tuple

from loghogd import permissions, safefs
from loghogd.facilities import Facility

DIR_MODE = 0o750
FILE_MODE = 0o640

FileKey = Tuple[Facility, Optional[str]]
"""A file in the writer: its facility and, with file_per_host, the safe host name."""


def make_dirs(path: str) -> None:
    """Create `path` and its missing parents with the private mode."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)


class LogFile:
    """One open log file and the lines waiting for it."""

    __slots__ = ('path', 'root', 'facility', 'key', 'max_size', 'on_full', 'partial', 'torn', 'pending', 'unwritten',
                 'held', 'drops', 'size', 'first_pending_at', 'urgent', '_fd', '_inode')

    def __init__(self, path: str, facility: Facility, key: Optional[FileKey] = None,
                 on_full: Optional[Callable[['LogFile'], None]] = None, root: Optional[str] = None) -> None:
        self.path = path
        self.root = root
        self.facility = facility
        self.key = key
        self.max_size = facility.max_size or 0
        self.on_full = on_full
        self.partial = False
        self.torn = False
        self.pending: List[str] = []
        self.unwritten = b''
        self.held = 0
        self.drops = 0
        self.size = 0
        self.first_pending_at = 0.0
        self.urgent = False
        self._fd: Optional[int] = None
        self._inode: Tuple[int, int] = (0, 0)

    def _open(self) -> int:
        """Open for appending, following no link below the log directory (loghogd/safefs.py)."""
        facility = self.facility
        root = self.root or os.path.dirname(self.path)
        fd = safefs.open_file(root, self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE, create_mode=DIR_MODE)
        try:
            if facility.file_mode is not None or facility.file_group is not None:
                permissions.apply(fd, facility.file_mode, facility.file_group)
            if facility.dir_mode is not None or facility.file_group is not None:
                permissions.apply_to_directory(root, self.path, facility.dir_mode, facility.file_group)
        except BaseException:
            os.close(fd)
            raise
        status = os.fstat(fd)
        self._fd, self.size, self._inode = fd, status.st_size, (status.st_dev, status.st_ino)
        self.torn = bool(self.size) and not self.partial and _last_byte(fd, self.size) != b'\n'
        return fd

    def _end_torn_line(self) -> None:
        """A kill cut the file's last line short: end it, so the next line starts on its own."""
        if self.torn:
            if not self.unwritten.startswith(b'\n'):  # queued by an earlier attempt that failed
                self.unwritten = b'\n' + self.unwritten
            self.torn = False

    def reopen_if_moved(self) -> None:
        """An operator deleted or moved the file: the next write recreates it."""
        if self._fd is None:
            return
        try:
            status = os.stat(self.path, follow_symlinks=False)
            moved = (status.st_dev, status.st_ino) != self._inode
        except FileNotFoundError:
            moved = True
        if moved:
            self.close()

    def stage(self) -> Tuple[int, int]:
        """Queue the pending lines for this file; return its size before and after they are written.

        With max_size, the records that do not fit are split off first:
        what fills the file is written and the file rotated, as often as
        needed, so that only the part for the file now open is left.
        Acknowledged delivery journals these offsets before the write, so
        that a crash in the middle of it can be told apart from a finished one.
        """
        if self._fd is None:
            self._open()
        if self.max_size and self.on_full is not None:
            self._write_full_parts()
        elif self.pending:
            self.unwritten += encode_lines(self.pending)
            self.pending = []
        self._end_torn_line()
        return self.size, self.size + len(self.unwritten)

    def _write_full_parts(self) -> None:
        """Before a record would take the file past max_size, write what precedes it and rotate.

        Records are never split: one larger than max_size goes alone into a
        file of its own. Bytes left by a failed write count as one record;
        after a partial write they must end in this file.
        """
        records = self.pending
        leftover = [self.unwritten] if self.unwritten else []
        parts = leftover + [line.encode('utf-8', 'backslashreplace') for line in records]
        self.pending, self.unwritten = [], b''
        chunk: List[bytes] = []
        chunk_size = 0
        for index, record in enumerate(parts):
            if (self.size + chunk_size + len(record) > self.max_size and (self.size or chunk_size)
                    and not (self.partial and index == 0)):
                if chunk:
                    self._write_part(b''.join(chunk), records[index - len(leftover):])
                self.on_full(self)
                if self._fd is None:
                    self._open()
                chunk, chunk_size = [], 0
            chunk.append(record)
            chunk_size += len(record)
        self.unwritten = b''.join(chunk)

    def _write_part(self, data: bytes, records_after: List[str]) -> None:
        """Write a part that fills the file; on failure keep it and the records after it queued."""
        self.unwritten = data
        self._end_torn_line()
        data, self.unwritten = self.unwritten, b''
        try:
            self._write(data)
        except OSError:
            self.pending = records_after
            raise

    def write_pending(self) -> int:
        """Write what is queued, rotating at max_size on the way; return the bytes of the last write.

        Raises OSError with the unwritten bytes kept (and counted as held) for the next try.
        """
        try:
            self.stage()
        except OSError:
            self.unwritten += encode_lines(self.pending)
            self.pending = []
            raise
        data, self.unwritten = self.unwritten, b''
        return self._write(data)

    def _write(self, data: bytes) -> int:
        fd = self._fd
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
        finally:
            self.unwritten = data[written:]
            self.size += written
            self.partial = bool(self.unwritten) and (written > 0 or self.partial)
        return written

    def fsync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def current_size(self) -> int:
        """Bytes in the file now: known while open, else one stat."""
        if self._fd is not None:
            return self.size
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def renamed(self) -> None:
        """The rotator moved the file away: an open file starts anew at its path."""
        was_open = self._fd is not None
        self.close()
        self.size = 0
        if was_open:
            self._open()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _last_byte(fd: int, size: int) -> bytes:
    """The byte at size - 1; b'\\n' if unreadable."""
    try:
        return os.pread(fd, 1, size - 1)
    except OSError:
        return b'\n'


def encode_lines(lines: List[str]) -> bytes:
    """UTF-8, with a lone surrogate from a JSON escape written as \\udXXX."""
    text = ''.join(lines)
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:
        return text.encode('utf-8', 'backslashreplace')
