"""Rotation, retention and compression of the log files, driven by the loop.

The Rotator knows every log file with a schedule (the facilities' files and
loghogd's own log), when each is due, and which backups each may keep. The
loop asks it how long it may sleep (`next_wakeup`) and lets it work between
passes (`tick`), so files rotate on time with no traffic at all.

A rotation, in this order, so that a kill -9 at any point loses and
duplicates no line:

1. the new rotation time is recorded in the state file (fsync'd, atomic);
2. `<file>` is renamed to `<file>.<time of the previous rotation>`;
3. the writer opens a new `<file>`;
4. retention deletes the backups beyond backup_count (and max_age);
5. a compressor child compresses the backup (loghogd/compressor.py).

Rotation never writes lines itself: lines already written stay in the
backup, lines still queued go to the new file in the writer's next write.
So every line is written exactly once, by the writer. A size rotation
happens inside the writer's flush, just before the write that would pass
max_size. A file that is empty when its schedule comes is not rotated: its
due time just moves on, so a size rotation shortly before midnight does not
leave an empty backup at midnight.
"""

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from dateutil import tz

from loghogd import safefs
from loghogd.compressor import EXTENSIONS, STAMP_PATTERN, Compressor, recover, unlink_quietly
from loghogd.config import Config
from loghogd.facilities import Facilities, Facility
from loghogd.schedule import RotationSchedule, RotationState, parse_rotate
from loghogd.stats import Counters
from loghogd.writer import FileKey, LogFile, Writer, safe_hostname

log = logging.getLogger('loghogd')

STATE_FILE = 'rotation-state.json'
BACKUP_STAMP = '%Y-%m-%d-%H-%M-%S-%f'
STAMP_LENGTH = len('2000-01-01-00-00-00-000000')
RETRY_SECONDS = 10.0
STATE_SAVE_INTERVAL = 1.0
STOP_WAIT_SECONDS = 5.0
NEVER = math.inf


@dataclass
class Tracked:
    """One log file the rotator watches; `key` is None for loghogd's own log."""
    path: str
    schedule: RotationSchedule
    backup_count: int
    max_age: Optional[float]
    key: Optional[FileKey]
    due: float = NEVER


def backup_pattern(path: str) -> 're.Pattern[str]':
    """Exact backup names of `path`: web.log's never match web.requests.log's."""
    return re.compile(re.escape(os.path.basename(path)) + r'\.(' + STAMP_PATTERN + r')(\.xz|\.gz|\.bz2)?\Z')


def local_time(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz.tzlocal())


class Rotator:
    """Owns the rotation state and the compressor; rotates what is due."""

    def __init__(self, config: Config, facilities: Facilities, writer: Writer, counters: Counters,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.clock = clock
        self.counters = counters
        self.logdir = config.main.logdir
        self.workdir = config.main.workdir
        self.facilities = facilities
        self.internal_log = config.log
        self.state = RotationState.load(os.path.join(self.workdir, STATE_FILE))
        self.compressor = Compressor(config.compressor.format, config.compressor.level, counters)
        self._tracked: Dict[str, Tracked] = {}
        self._next_due = NEVER
        self._state_dirty = False
        self._state_save_due = 0.0
        writer.on_new_file = self.track_file
        writer.on_full = self.rotate_full

    # start-up ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """Before serving: finish interrupted work, then rotate what is overdue."""
        if self.state.warning:
            log.warning('%s', self.state.warning)
        self.state.remove_temporary_files()
        recover(self._backup_directories(), self.compressor, self._compressed)
        if self.internal_log.filename:
            self._track(Tracked(self.internal_log.filename, parse_rotate(self.internal_log.when),
                                self.internal_log.backup_count, None, None), now)
        self._discover(self.facilities, now)
        self._forget_vanished_files()
        self._rotate_due(now)
        for entry in list(self._tracked.values()):
            self._retain(entry, now)
        self._save_state_if_dirty(now)

    def _forget_vanished_files(self) -> None:
        """Forget the rotation times of files that are gone and not tracked (a host's file the operator deleted).

        A file that comes back starts a new period when its first line is written.
        """
        vanished = [path for path in self.state.paths() if path not in self._tracked and not os.path.lexists(path)]
        for path in vanished:
            self.state.forget(path)
        if vanished:
            self._state_dirty = True
            log.info('forgot the rotation times of %d log files that no longer exist', len(vanished))

    def _backup_directories(self) -> List[str]:
        directories = {self.logdir}
        try:
            directories.update(entry.path for entry in os.scandir(self.logdir) if entry.is_dir(follow_symlinks=False))
        except OSError:
            pass
        if self.internal_log.filename:
            directories.add(os.path.dirname(self.internal_log.filename))
        return sorted(directories)

    def _discover(self, facilities: Iterable[Facility], now: float) -> None:
        """Existing files of configured facilities, which may be due with no traffic."""
        ordered = sorted(facilities, key=lambda facility: facility.file_per_host)
        for facility in ordered:
            for key in self._existing_keys(facility):
                path = self.writer.path_for(*key)
                if path not in self._tracked:
                    self._track_key(path, key, now)

    def _existing_keys(self, facility: Facility) -> List[FileKey]:
        if not facility.file_per_host:
            key: FileKey = (facility, None)
            return [key] if os.path.exists(self.writer.path_for(*key)) else []
        suffix = '-%s.log' % facility.module
        try:
            names = os.listdir(os.path.join(self.logdir, facility.app_id))
        except OSError:
            return []
        hosts = [name[:-len(suffix)] for name in names if name.endswith(suffix) and len(name) > len(suffix)]
        return [(facility, host) for host in hosts if safe_hostname(host) == host]

    # tracking ---------------------------------------------------------------

    def track_file(self, logfile: LogFile) -> None:
        """The writer made a LogFile: learn when it is due."""
        self._track_key(logfile.path, logfile.key, self.clock())

    def _track_key(self, path: str, key: FileKey, now: float) -> None:
        facility = key[0]
        self._track(Tracked(path, facility.rotate, facility.backup_count, facility.max_age, key), now)

    def _track(self, entry: Tracked, now: float) -> None:
        """Due time from the last rotation; a file never rotated starts its period now.

        A file that already exists but was never rotated counts from its
        last change, so a daily file left from yesterday rotates at start-up.
        """
        last = self.state.last_rotation(entry.path)
        if last is None:
            last = local_time(min(now, file_mtime(entry.path, now)))
            self.state.record(entry.path, last)
            self._state_dirty = True
        entry.due = _due_after(entry.schedule, last)
        self._tracked[entry.path] = entry
        self._next_due = min(self._next_due, entry.due)

    def set_facilities(self, facilities: Facilities, now: Optional[float] = None) -> None:
        """After a reload: new schedules for changed facilities; removed ones are left alone."""
        now = self.clock() if now is None else now
        current = {(facility.app_id, facility.module): facility for facility in facilities}
        for path, entry in list(self._tracked.items()):
            if entry.key is None:
                continue
            old = entry.key[0]
            new = current.get((old.app_id, old.module))
            if new is None or new.file_per_host != old.file_per_host:
                del self._tracked[path]
            elif new != old:
                self._track_key(path, (new, entry.key[1]), now)
        self.facilities = facilities
        self._discover(facilities, now)
        self._recompute_next_due()

    def _recompute_next_due(self) -> None:
        self._next_due = min((entry.due for entry in self._tracked.values()), default=NEVER)

    # the loop's side ----------------------------------------------------------

    @property
    def next_due(self) -> float:
        """When the next file is due (a timestamp; inf when none has a schedule)."""
        return self._next_due

    def next_wakeup(self, now: float) -> float:
        """Seconds the loop may sleep: until the next due rotation (or compressor poll)."""
        wait = min(self._next_due - now, self.compressor.next_wakeup())
        if self._state_dirty:
            wait = min(wait, self._state_save_due - now)
        return max(0.0, wait)

    def tick(self, now: float) -> None:
        """Between loop passes: rotate what is due, save the state now and then."""
        if now >= self._next_due:
            self._rotate_due(now)
        self._save_state_if_dirty(now)

    def reap(self) -> None:
        """SIGCHLD: finish exited compressors."""
        self.compressor.reap()

    def rotate_all(self, now: float) -> None:
        """SIGUSR2 (a test and operator hook): rotate every file that holds lines, now."""
        log.info('rotating every log file now (SIGUSR2)')
        self._rotate(list(self._tracked.values()), now, 'requested')
        self._recompute_next_due()

    def rotate_full(self, logfile: LogFile) -> None:
        """The writer's next write would take `logfile` past max_size: rotate it first."""
        now = self.clock()
        entry = self._tracked.get(logfile.path)
        if entry is None:
            self._track_key(logfile.path, logfile.key, now)
            entry = self._tracked[logfile.path]
        self._rotate_now([(entry, logfile)], now, 'max_size %d reached' % logfile.max_size)
        self._next_due = min(self._next_due, entry.due)

    def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """At exit: give running compressors `timeout` s, save the state."""
        self.compressor.stop(timeout)
        self._save_state_if_dirty(math.inf)

    # rotating -----------------------------------------------------------------

    def _rotate_due(self, now: float) -> None:
        due = [entry for entry in self._tracked.values() if entry.due <= now]
        for schedule in sorted({entry.schedule.spec for entry in due}):
            self._rotate([entry for entry in due if entry.schedule.spec == schedule], now,
                         'scheduled (%s)' % schedule)
        self._recompute_next_due()

    def _rotate(self, entries: List[Tracked], now: float, reason: str) -> None:
        """Rotate those that hold bytes; an empty file only moves its due time on."""
        ready = []
        for entry in entries:
            logfile = self.writer.get(entry.key) if entry.key is not None else None
            if logfile is not None and logfile.partial:
                log.warning('not rotating %s yet: a write to it is unfinished', entry.path)
                entry.due = now + RETRY_SECONDS
            elif (logfile.current_size() if logfile is not None else _size(entry.path)) == 0:
                when = local_time(now)
                self.state.record(entry.path, when)
                self._state_dirty = True
                entry.due = _due_after(entry.schedule, when)
            else:
                ready.append((entry, logfile))
        self._rotate_now(ready, now, reason)

    def _rotate_now(self, files: List[Tuple[Tracked, Optional[LogFile]]], now: float, reason: str) -> None:
        """Record the rotation of all `files` with one state save, then rename each.

        One fsync'd save for a whole batch keeps a midnight with many files
        from stalling the loop for one disk flush per file.
        """
        if not files:
            return
        when = local_time(now)
        plans = []
        for entry, logfile in files:
            previous = self.state.last_rotation(entry.path) or when
            plans.append((entry, logfile, self._backup_name(entry.path, previous), previous))
            self.state.record(entry.path, when)
        try:
            self.state.save()
            self._state_dirty = False
        except OSError as error:
            log.error('cannot save the rotation state %s: %s; rotating nothing, trying again in %.0f s',
                      self.state.path, error, RETRY_SECONDS)
            for entry, _logfile, _backup, previous in plans:
                self.state.record(entry.path, previous)
                entry.due = now + RETRY_SECONDS
            return
        for entry, logfile, backup, _previous in plans:
            self._rename(entry, logfile, backup, now, reason)

    def _rename(self, entry: Tracked, logfile: Optional[LogFile], backup: str, now: float, reason: str) -> None:
        try:
            safefs.rename_file(self.logdir, entry.path, backup)
        except safefs.UnsafePath as error:
            self.counters.unsafe_paths_refused += 1
            entry.due = _due_after(entry.schedule, self.state.last_rotation(entry.path))
            log.error('not rotating %s: %s', entry.path, error.strerror)
            return
        except OSError as error:
            log.error('cannot rotate %s: %s; trying again in %.0f s', entry.path, error, RETRY_SECONDS)
            entry.due = now + RETRY_SECONDS
            return
        if logfile is not None:
            logfile.renamed()
        self.counters.rotations += 1
        entry.due = _due_after(entry.schedule, self.state.last_rotation(entry.path))
        log.info('rotated %s to %s: %s', entry.path, os.path.basename(backup), reason)
        self._retain(entry, now)
        if os.path.exists(backup):
            self.compressor.submit(backup, self._compressed)

    @staticmethod
    def _backup_name(path: str, previous: datetime) -> str:
        """`<file>.<previous rotation>`, a microsecond later while that name is taken."""
        while True:
            backup = '%s.%s' % (path, previous.strftime(BACKUP_STAMP))
            if not any(os.path.lexists(backup + extension) for extension in ('', *EXTENSIONS.values())):
                return backup
            previous += timedelta(microseconds=1)

    def _compressed(self, plain: str) -> None:
        """A compression ended: retention may now delete what it had to leave."""
        entry = self._tracked.get(plain[:-STAMP_LENGTH - 1])
        if entry is not None:
            self._retain(entry, self.clock())

    # retention ----------------------------------------------------------------

    def _retain(self, entry: Tracked, now: float) -> None:
        """Delete backups beyond backup_count and older than max_age.

        A backup's age counts from its last line, that is the next backup's
        stamp (or the last rotation for the newest). One being compressed
        is left until its compressor ends.
        """
        directory = os.path.dirname(entry.path)
        pattern = backup_pattern(entry.path)
        try:
            if entry.key is not None:
                safefs.real_directory(self.logdir, directory)
            names = os.listdir(directory)
        except OSError:
            return
        backups: Dict[str, List[str]] = {}
        for name in names:
            match = pattern.match(name)
            if match:
                backups.setdefault(match.group(1), []).append(name)
        stamps = sorted(backups)
        doomed = set(stamps[:max(0, len(stamps) - entry.backup_count)])
        if entry.max_age is not None and stamps:
            last = self.state.last_rotation(entry.path)
            ends = [_stamp_time(stamp) for stamp in stamps[1:]] + [last.timestamp() if last else now]
            doomed.update(stamp for stamp, end in zip(stamps, ends) if end < now - entry.max_age)
        for stamp in sorted(doomed):
            plain = '%s.%s' % (entry.path, stamp)
            if self.compressor.busy_with(plain):
                continue
            for name in backups[stamp]:
                unlink_quietly(os.path.join(directory, name))
            log.info('deleted backup %s.%s (backup_count %d%s)', os.path.basename(entry.path), stamp,
                     entry.backup_count, '' if entry.max_age is None else ', max_age %.0f s' % entry.max_age)

    def _save_state_if_dirty(self, now: float) -> None:
        if not self._state_dirty or now < self._state_save_due:
            return
        try:
            self.state.save()
            self._state_dirty = False
        except OSError as error:
            log.error('cannot save the rotation state %s: %s', self.state.path, error)
        self._state_save_due = now + STATE_SAVE_INTERVAL


def _due_after(schedule: RotationSchedule, last: datetime) -> float:
    due = schedule.next_due(last)
    return NEVER if due is None else due.timestamp()


def _stamp_time(stamp: str) -> float:
    return datetime.strptime(stamp, BACKUP_STAMP).timestamp()


def file_mtime(path: str, default: float = 0.0) -> float:
    """The file's modification time, or `default` when it cannot be read."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return default


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
