"""Log files: where a message goes, and getting its line onto the disk.

Lines of one loop pass are queued per file and leave in a single write(),
so a burst costs one system call per file, not one per message. A file that
cannot be written keeps its lines in a bounded buffer and retries; nothing
is dropped silently. One file's opening and writing is loghogd/logfile.py.
"""

import collections
import itertools
import logging
import re
from typing import Callable, Dict, List, Optional, Set, Tuple

from loghogd import safefs
from loghogd.facilities import Facility
from loghogd.logfile import FileKey, LogFile
from loghogd.names import log_path
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters

log = logging.getLogger('loghogd')

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

    def queue_lines(self, logfile: LogFile, head: str, texts: List[str], now: float) -> None:
        """Queue a line `head + text` for each text, as one string while it surely fits under the
        file's max_size; near it one entry per record, since max_size rotation never splits an entry."""
        lines = head + ('\n' + head).join(texts) + '\n'
        if logfile.max_size:
            most_bytes = (len(lines) if lines.isascii() else 4 * len(lines)) + 4 * sum(map(len, logfile.pending))
            if logfile.current_size() + len(logfile.unwritten) + most_bytes > logfile.max_size:  # 4: UTF-8's most
                for text in texts:
                    self.queue(logfile, head + text + '\n', now)
                return
        self.queue(logfile, lines, now)

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
