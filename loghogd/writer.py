"""Log files: where a message goes, and getting its line onto the disk.

Lines of one loop pass are queued per file and leave in a single write(),
so a burst costs one system call per file, not one per message. A file that
cannot be written keeps its lines in a bounded buffer and retries; nothing
is dropped silently.
"""

import collections
import logging
import os
import re
import time
from typing import Dict, List, Optional, Tuple

from loghogd.facilities import Facility
from loghogd.stats import Counters, RateLimitedReporter

log = logging.getLogger('loghogd')

DIR_MODE = 0o750
FILE_MODE = 0o640
MAX_OPEN_FILES = 512
MAX_HELD_BYTES = 64 * 1024 * 1024
HELD_FLUSH_SECONDS = 1.0
HOSTNAME_MAX = 64
_UNSAFE_NAME_CHARS = re.compile(r'[^A-Za-z0-9_.-]')
_LINE_CONTROL_CHARS = re.compile(r'[\x00-\x1f\x7f]')


def safe_hostname(hostname: str) -> str:
    """A client's host name turned into a harmless file-name part.

    Anything but ASCII letters, digits, '.', '_' and '-' becomes '_', a
    leading dot is dropped, and the result is never empty nor overlong.
    """
    name = _UNSAFE_NAME_CHARS.sub('_', hostname[:HOSTNAME_MAX]).lstrip('.')
    return name or 'unknown'


def line_hostname(hostname: str) -> str:
    """A host name as it appears inside a line: no control characters."""
    return _LINE_CONTROL_CHARS.sub('?', hostname[:255])


def make_dirs(path: str) -> None:
    """Create `path` and its missing parents with the private mode."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)


class LogFile:
    """One open log file and the lines waiting for it."""

    __slots__ = ('path', 'facility', 'pending', 'unwritten', 'held', 'size', 'first_pending_at', '_fd', '_inode')

    def __init__(self, path: str, facility: Facility) -> None:
        self.path = path
        self.facility = facility
        self.pending: List[str] = []
        self.unwritten = b''
        self.held = 0
        self.size = 0
        self.first_pending_at = 0.0
        self._fd: Optional[int] = None
        self._inode: Tuple[int, int] = (0, 0)

    def _open(self) -> int:
        make_dirs(os.path.dirname(self.path))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        status = os.fstat(fd)
        self._fd, self.size, self._inode = fd, status.st_size, (status.st_dev, status.st_ino)
        return fd

    def reopen_if_moved(self) -> None:
        """An operator deleted or moved the file: the next write recreates it."""
        if self._fd is None:
            return
        try:
            status = os.stat(self.path)
            moved = (status.st_dev, status.st_ino) != self._inode
        except FileNotFoundError:
            moved = True
        if moved:
            self.close()

    def stage(self) -> Tuple[int, int]:
        """Encode the queued lines; return the file's size before and after they are written.

        Acknowledged delivery journals these offsets before the write, so that
        a crash in the middle of it can be told apart from a finished one.
        """
        if self._fd is None:
            self._open()
        if self.pending:
            self.unwritten += encode_lines(self.pending)
            self.pending = []
        return self.size, self.size + len(self.unwritten)

    def write_pending(self) -> int:
        """Write what is queued in one go; return the bytes written.

        Raises OSError with the unwritten bytes kept for the next try.
        """
        data = self.unwritten + encode_lines(self.pending)
        self.pending = []
        self.unwritten = data
        fd = self._fd if self._fd is not None else self._open()
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
        finally:
            self.unwritten = data[written:]
            self.size += written
        return written

    def fsync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def encode_lines(lines: List[str]) -> bytes:
    """UTF-8, with a lone surrogate from a JSON escape written as \\udXXX."""
    text = ''.join(lines)
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:
        return text.encode('utf-8', 'backslashreplace')


class Writer:
    """Chooses the file for a message and writes each loop pass's lines."""

    def __init__(self, logdir: str, counters: Counters, reporter: RateLimitedReporter,
                 max_open_files: int = MAX_OPEN_FILES) -> None:
        self.logdir = logdir
        self.counters = counters
        self.reporter = reporter
        self.max_open_files = max_open_files
        self._files: Dict[Tuple[Facility, Optional[str]], LogFile] = collections.OrderedDict()
        self.dirty: List[LogFile] = []
        self.generation = 0
        self._held_bytes = 0

    def path_for(self, facility: Facility, hostname: Optional[str]) -> str:
        name = facility.module if hostname is None else '%s-%s' % (hostname, facility.module)
        return os.path.join(self.logdir, facility.app_id, name + '.log')

    def file_for(self, facility: Facility, hostname: str) -> LogFile:
        """The LogFile for a message; opened lazily, least recently used closed first."""
        key = (facility, safe_hostname(hostname) if facility.file_per_host else None)
        files = self._files
        logfile = files.get(key)
        if logfile is None:
            logfile = LogFile(self.path_for(*key), facility)
            files[key] = logfile
            if len(files) > self.max_open_files:
                self._evict_oldest()
        else:
            files.move_to_end(key)
        return logfile

    def _evict_oldest(self) -> None:
        self.generation += 1
        for key in list(self._files)[:len(self._files) // 8 or 1]:
            logfile = self._files[key]
            if logfile.pending or logfile.unwritten:
                continue
            logfile.close()
            del self._files[key]

    def open_files(self) -> List[LogFile]:
        return list(self._files.values())

    def forget_facilities(self, keep: set) -> None:
        """After a reload: flush and close the files of facilities that changed."""
        self.generation += 1
        for key, logfile in list(self._files.items()):
            if key[0] not in keep:
                self.flush_file(logfile)
                logfile.close()
                del self._files[key]
        self.dirty = [logfile for logfile in self.dirty if logfile.facility in keep]

    def flush(self, now: float, force: bool = False) -> None:
        """Write the lines of this loop pass: one write() per file."""
        still_dirty = []
        for logfile in self.dirty:
            facility = logfile.facility
            if (force or facility.flush_every <= len(logfile.pending)
                    or now - logfile.first_pending_at >= HELD_FLUSH_SECONDS or logfile.unwritten):
                if not self.flush_file(logfile):
                    still_dirty.append(logfile)
            else:
                still_dirty.append(logfile)
        self.dirty = still_dirty

    def flush_file(self, logfile: LogFile) -> bool:
        """Write one file's queue; on failure keep it (bounded) and say so."""
        if not logfile.pending and not logfile.unwritten:
            return True
        try:
            logfile.write_pending()
            self._held_bytes -= logfile.held
            logfile.held = 0
            return True
        except OSError as error:
            self.counters.write_errors += 1
            self._held_bytes += len(logfile.unwritten) - logfile.held
            logfile.held = len(logfile.unwritten)
            self.reporter.report('write:' + logfile.path, logging.ERROR,
                                 'cannot write %s: %s; keeping %d bytes in memory',
                                 logfile.path, error.strerror or error, len(logfile.unwritten))
            logfile.close()
            if self._held_bytes > MAX_HELD_BYTES:
                self._drop_held(logfile)
            return False

    def _drop_held(self, logfile: LogFile) -> None:
        dropped = logfile.unwritten
        self._held_bytes -= logfile.held
        logfile.unwritten = b''
        logfile.held = 0
        lines = dropped.count(b'\n')
        self.counters.messages_dropped_unwritable += lines
        log.error('memory buffer for %s is full: dropped %d held lines', logfile.path, lines)

    def check_moved_files(self) -> None:
        for logfile in self._files.values():
            logfile.reopen_if_moved()

    def close_all(self) -> None:
        self.flush(time.time(), force=True)
        for logfile in self._files.values():
            logfile.close()
