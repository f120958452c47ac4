"""Log files: where a message goes, and getting its line onto the disk.

Lines of one loop pass are queued per file and leave in a single write(),
so a burst costs one system call per file, not one per message. A file that
cannot be written keeps its lines in a bounded buffer and retries; nothing
is dropped silently.

A file with a max_size costs one comparison per record: the size it had
when opened plus what was written since, against the record about to be
added. Before a record would pass max_size, what precedes it is written and
`on_full` (the rotator, loghogd/rotation.py) rotates the file, so a file
never passes max_size, except by a single record larger than max_size,
which then is its file's only content.
"""

import collections
import itertools
import logging
import os
import re
from typing import Callable, Dict, List, Optional, Set, Tuple

from loghogd import permissions, safefs
from loghogd.facilities import Facility
from loghogd.names import log_path
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters

log = logging.getLogger('loghogd')

DIR_MODE = 0o750
FILE_MODE = 0o640
MAX_OPEN_FILES = 512
MAX_HELD_BYTES = 64 * 1024 * 1024
HELD_FLUSH_SECONDS = 1.0
MOVED_CHECK_SECONDS = 1.0
HOSTNAME_MAX = 64
_UNSAFE_NAME_CHARS = re.compile(r'[^A-Za-z0-9_.-]')


def safe_hostname(hostname: str) -> str:
    """A client's host name turned into a harmless file-name part.

    Anything but ASCII letters, digits, '.', '_' and '-' becomes '_', a
    leading dot is dropped, and the result is never empty nor overlong.
    """
    name = _UNSAFE_NAME_CHARS.sub('_', hostname[:HOSTNAME_MAX]).lstrip('.')
    return name or 'unknown'


def make_dirs(path: str) -> None:
    """Create `path` and its missing parents with the private mode."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)


class LogFile:
    """One open log file and the lines waiting for it."""

    __slots__ = ('path', 'root', 'facility', 'key', 'max_size', 'on_full', 'partial', 'torn', 'pending', 'unwritten',
                 'held', 'drops', 'size', 'first_pending_at', 'urgent', '_fd', '_inode')

    def __init__(self, path: str, facility: Facility, key: Optional['FileKey'] = None,
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


FileKey = Tuple[Facility, Optional[str]]
"""A file in the writer: its facility and, with file_per_host, the safe host name."""


class TooManyHosts(Exception):
    """A new host for a file_per_host facility that already has max_hosts host files."""


class Writer:
    """Chooses the file for a message and writes each loop pass's lines.

    `on_new_file(logfile)` hears of every LogFile made (the rotator tracks
    its schedule); `on_full(logfile)` rotates a file that a write would take
    past its max_size.
    """

    def __init__(self, logdir: str, counters: Counters, reporter: RateLimitedReporter,
                 max_open_files: int = MAX_OPEN_FILES) -> None:
        self.logdir = logdir
        self.counters = counters
        self.reporter = reporter
        self.max_open_files = max_open_files
        self._files: Dict[FileKey, LogFile] = collections.OrderedDict()
        self.dirty: List[LogFile] = []
        self.generation = 0
        self.on_new_file: Optional[Callable[[LogFile], None]] = None
        self.on_full: Optional[Callable[[LogFile], None]] = None
        self._held_bytes = 0
        self._next_moved_check = 0.0
        self._hosts: Dict[Tuple[str, str], Set[str]] = {}
        self._retiring: Set[LogFile] = set()

    def path_for(self, facility: Facility, hostname: Optional[str]) -> str:
        return log_path(self.logdir, facility.app_id, facility.module, hostname)

    def note_host(self, facility: Facility, hostname: str) -> None:
        """A host file that exists already: it counts toward max_hosts and stays writable."""
        self._hosts.setdefault((facility.app_id, facility.module), set()).add(hostname)

    def _admit_host(self, facility: Facility, hostname: str) -> None:
        hosts = self._hosts.setdefault((facility.app_id, facility.module), set())
        if hostname not in hosts:
            if len(hosts) >= facility.max_hosts:
                raise TooManyHosts('%s has max_hosts %d host files; a file for host %s is refused'
                                   % (facility.name, facility.max_hosts, hostname))
            hosts.add(hostname)

    def file_for(self, facility: Facility, hostname: str) -> LogFile:
        """The LogFile for a message; opened lazily, least recently used closed first."""
        return self.file_for_key((facility, safe_hostname(hostname) if facility.file_per_host else None))

    def file_for_key(self, key: FileKey) -> LogFile:
        """The one LogFile of `key`, made when needed: never two for one path.

        Raises TooManyHosts for a host beyond its facility's max_hosts.
        """
        files = self._files
        logfile = files.get(key)
        if logfile is None:
            if key[1] is not None:
                self._admit_host(*key)
            logfile = LogFile(self.path_for(*key), key[0], key, self.on_full, self.logdir)
            files[key] = logfile
            if len(files) > self.max_open_files:
                self._evict_oldest()
            if self.on_new_file is not None:
                self.on_new_file(logfile)
        else:
            files.move_to_end(key)
        return logfile

    def get(self, key: FileKey) -> Optional[LogFile]:
        """The LogFile of `key` if the writer has one (its fd may be open)."""
        return self._files.get(key)

    def _evict_oldest(self) -> None:
        """Forget the least recently used files; one still holding lines counts as used.

        At most max_open_files // 8 are looked at, so that a pass with
        thousands of new hosts costs a bounded amount of work per new file.
        """
        self.generation += 1
        files = self._files
        for key in list(itertools.islice(files, self.max_open_files // 8 or 1)):
            logfile = files[key]
            if logfile.pending or logfile.unwritten:
                files.move_to_end(key)
                continue
            logfile.close()
            del files[key]

    def open_files(self) -> List[LogFile]:
        return list(self._files.values())

    def queue(self, logfile: LogFile, line: str, now: float) -> None:
        """Queue `line` for `logfile`; it leaves with the file's next write (flush_every, or a second at most)."""
        if not logfile.pending and not logfile.unwritten:
            logfile.first_pending_at = now
            logfile.urgent = False
            self.dirty.append(logfile)
        logfile.pending.append(line)

    @staticmethod
    def write_this_pass(logfile: LogFile) -> None:
        """The lines queued for `logfile` are written at the end of this pass (an acknowledged record waits for it)."""
        logfile.urgent = True

    def forget_facilities(self, keep: set) -> None:
        """After a reload: close the files of facilities that changed (new messages get new LogFiles).

        One still holding lines (its disk refused them) keeps them, and its
        place in the pass's write, until a pass writes them; then it closes.
        Writing happens only in a loop pass (loghogd/pipeline.py), inside the
        journal: nothing is written, dropped or left open here.
        """
        self.generation += 1
        for key, logfile in list(self._files.items()):
            if key[0] not in keep:
                del self._files[key]
                if logfile.pending or logfile.unwritten:
                    self._retiring.add(logfile)
                else:
                    logfile.close()

    def flush(self, now: float, force: bool = False) -> None:
        """Write the lines of this loop pass: one write() per file.

        While more files are in use than max_open_files (many hosts in one
        pass), each is closed after its write, so descriptors stay bounded.
        """
        if now >= self._next_moved_check:
            self._next_moved_check = now + MOVED_CHECK_SECONDS
            self.check_moved_files()
        still_dirty = []
        over_cache = len(self._files) > self.max_open_files
        for logfile in self.dirty:
            facility = logfile.facility
            if (force or logfile.urgent or facility.flush_every <= len(logfile.pending)
                    or now - logfile.first_pending_at >= HELD_FLUSH_SECONDS or logfile.unwritten):
                if not self.flush_file(logfile):
                    still_dirty.append(logfile)
                elif over_cache or logfile in self._retiring:
                    self._retiring.discard(logfile)
                    logfile.close()
            else:
                still_dirty.append(logfile)
        self.dirty = still_dirty

    def flush_file(self, logfile: LogFile) -> bool:
        """Write one file's queue; on failure keep it (bounded) and say so."""
        if not logfile.pending and not logfile.unwritten:
            return True
        try:
            logfile.write_pending()
            if logfile.facility.sync:
                logfile.fsync()
            self._held_bytes -= logfile.held
            logfile.held = 0
            return True
        except OSError as error:
            self.counters.write_errors += 1
            if isinstance(error, safefs.UnsafePath):
                self.counters.unsafe_paths_refused += 1
            self._held_bytes += len(logfile.unwritten) - logfile.held
            logfile.held = len(logfile.unwritten)
            self.reporter.report('write:%s' % error.errno, logging.ERROR,
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
        logfile.drops += 1
        logfile.partial = False
        # a leading newline ends a line whose text is on disk already (a torn or partial write): no loss
        lines = dropped.count(b'\n') - dropped.startswith(b'\n')
        self.counters.messages_dropped_unwritable += lines
        log.error('memory buffer for %s is full: dropped %d held lines', logfile.path, lines)

    def check_moved_files(self) -> None:
        for logfile in self._files.values():
            logfile.reopen_if_moved()

    def close_files(self) -> None:
        """At stop, after the last pass: close every file (writing is the pass's job, inside the journal)."""
        for logfile in [*self._files.values(), *self._retiring]:
            logfile.close()
        self._retiring.clear()
