"""Compression of rotated files in child processes the loop starts and reaps.

The loop never waits for a compressor: a child (`xz`, `zstd`, `gzip` or `bzip2`)
reads the plain backup on its stdin and writes `<backup>.<ext>.tmp`; only
when it exits 0 is that renamed to `<backup>.<ext>` and the plain backup
removed. So a final name always holds a whole archive, and a kill at any
moment leaves either the plain backup (compressed again at the next start)
or a finished archive, never a truncated one under a final name.
"""

import collections
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from typing import Callable, Deque, Dict, Optional, Set

from loghogd import safefs
from loghogd.backups import Listings
from loghogd.names import ARCHIVE_EXTENSIONS, archive_path, archive_temp_path, parse_backup
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.wakeup import NEVER

log = logging.getLogger('loghogd')

MAX_RUNNING = 2
STDERR_SHOWN = 500
FALLBACK = 'gzip'
QUIET = {'zstd': ['-q']}
"""Options that keep a tool from writing progress to the stderr kept for error messages."""

Done = Callable[[str], None]


def choose_format(configured: str) -> str:
    """The configured format, or gzip when its tool is not installed (xz and zstd are optional packages)."""
    if configured != FALLBACK and shutil.which(configured) is None:
        log.warning('%s is not on PATH (%s); compressing rotated logs with %s instead',
                    configured, os.environ.get('PATH', ''), FALLBACK)
        return FALLBACK
    return configured


class Job:
    """One backup to compress, and its child once started."""

    __slots__ = ('plain', 'done', 'process', 'output_fd', 'errors')

    def __init__(self, plain: str, done: Done) -> None:
        self.plain = plain
        self.done = done
        self.process: Optional[subprocess.Popen] = None
        self.output_fd = -1
        self.errors = None


class Compressor:
    """Runs at most `max_running` compressor children; the rest wait in order."""

    def __init__(self, configured_format: str, level: int, counters: Counters,
                 max_running: int = MAX_RUNNING) -> None:
        self.format = choose_format(configured_format)
        self.level = level
        self.extension = ARCHIVE_EXTENSIONS[self.format]
        self.counters = counters
        self.max_running = max_running
        self.queue: Deque[Job] = collections.deque()
        self.queued: Set[str] = set()
        self.running: Dict[str, Job] = {}
        self.reporter = RateLimitedReporter()

    def busy_with(self, plain: str) -> bool:
        """Whether `plain` is queued or being compressed (retention leaves it alone)."""
        return plain in self.running or plain in self.queued

    @property
    def idle(self) -> bool:
        return not self.running and not self.queue

    def submit(self, plain: str, done: Done) -> None:
        """Compress `plain` when a slot is free; `done(plain)` runs when it is over."""
        if not self.busy_with(plain):
            self.queue.append(Job(plain, done))
            self.queued.add(plain)
            self._start_queued()

    def _start_queued(self) -> None:
        while self.queue and len(self.running) < self.max_running:
            job = self.queue.popleft()
            self.queued.discard(job.plain)
            try:
                self._start(job)
            except safefs.UnsafePath as error:
                self.counters.unsafe_paths_refused += 1
                self.reporter.report('compress-unsafe', logging.ERROR, 'not compressing %s: %s', job.plain,
                                     error.strerror)
                job.done(job.plain)
                continue
            except OSError as error:
                self._failed(job, 'cannot start %s: %s' % (self.format, error.strerror or error))
                job.done(job.plain)
                continue
            self.running[job.plain] = job

    def _start(self, job: Job) -> None:
        temp_path = archive_temp_path(job.plain, self.extension)
        source_fd = safefs.open_file(os.path.dirname(job.plain), job.plain, os.O_RDONLY)
        with open(source_fd, 'rb') as source:
            job.output_fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                                    0o600)
            job.errors = tempfile.TemporaryFile()
            try:
                keep_permissions(source_fd, job.output_fd)
                job.process = subprocess.Popen(
                    [self.format, '-%d' % self.level, '-c', *QUIET.get(self.format, [])], stdin=source,
                    stdout=job.output_fd, stderr=job.errors, close_fds=True, start_new_session=True)
            except OSError:
                self._discard_output(job)
                raise

    def reap(self) -> None:
        """Finish the children that exited (SIGCHLD woke the loop); start queued ones."""
        for plain, job in list(self.running.items()):
            if job.process.poll() is None:
                continue
            del self.running[plain]
            self._finish(job)
            job.done(plain)
        self._start_queued()

    def _finish(self, job: Job) -> None:
        final_path = archive_path(job.plain, self.extension)
        if job.process.returncode != 0:
            self._failed(job, '%s exited with %s: %s' % (self.format, job.process.returncode, self._stderr(job)))
            return
        try:
            os.fsync(job.output_fd)
            os.close(job.output_fd)
            job.output_fd = -1
            os.rename(archive_temp_path(job.plain, self.extension), final_path)
            unlink_quietly(job.plain)
        except OSError as error:
            self._failed(job, str(error))
            return
        self._close_errors(job)
        self.counters.compressions += 1

    @staticmethod
    def _stderr(job: Job) -> str:
        job.errors.seek(0)
        text = job.errors.read(STDERR_SHOWN).decode('utf-8', 'replace').strip()
        return text or 'no message'

    def _failed(self, job: Job, reason: str) -> None:
        """Keep the plain backup, drop the partial output, and say why."""
        self.counters.compression_failures += 1
        log.error('compressing %s failed, keeping it uncompressed: %s', job.plain, reason)
        self._discard_output(job)

    def _discard_output(self, job: Job) -> None:
        if job.output_fd >= 0:
            os.close(job.output_fd)
            job.output_fd = -1
        unlink_quietly(archive_temp_path(job.plain, self.extension))
        self._close_errors(job)

    @staticmethod
    def _close_errors(job: Job) -> None:
        if job.errors is not None:
            job.errors.close()
            job.errors = None

    def next_wakeup(self) -> float:
        """A fallback poll while children run, should a SIGCHLD ever be missed."""
        return 1.0 if self.running else NEVER

    def stop(self, timeout: float) -> None:
        """At exit: wait up to `timeout` s, then stop what still runs (compressed next start)."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap()
        self.queue.clear()
        self.queued.clear()
        for job in self.running.values():
            job.process.kill()
            job.process.wait()
            self._discard_output(job)
            log.info('stopped compressing %s; it is compressed at the next start', job.plain)
        self.running.clear()


def recover(listings: Listings, compressor: Compressor, done: Done) -> Set[str]:
    """Start-up: finish what a crash interrupted in the listed directories; return the paths removed.

    Half-written `.tmp` archives are deleted; a plain backup whose archive
    already exists (killed between rename and unlink) is deleted; every
    other plain backup is compressed again, once every leftover is gone.
    One pass over each listing.
    """
    removed: Set[str] = set()
    plain = []
    for directory, names in listings.items():
        present = set(names)
        for name in names:
            backup = parse_backup(name)
            if backup is None or not (backup.temporary or backup.plain):
                continue
            path = os.path.join(directory, name)
            if backup.temporary or any(archive_path(name, extension) in present
                                       for extension in ARCHIVE_EXTENSIONS.values()):
                unlink_quietly(path)
                removed.add(path)
            else:
                plain.append(path)
    for path in plain:
        compressor.submit(path, done)
    queued = len(plain)
    if removed or queued:
        log.info('start-up recovery: removed %d leftover compressor files, compressing %d backups',
                 len(removed), queued)
    return removed


def keep_permissions(source_fd: int, target_fd: int) -> None:
    """The archive gets the backup's mode and group (a facility's file_mode and file_group)."""
    status = os.fstat(source_fd)
    if status.st_gid != os.fstat(target_fd).st_gid:
        os.fchown(target_fd, -1, status.st_gid)
    os.fchmod(target_fd, stat.S_IMODE(status.st_mode))


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
