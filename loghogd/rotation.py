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
4. a compressor child compresses it, then its post_rotate hook runs (compressor.py, hooks.py);
5. retention deletes the backups beyond backup_count, max_age and max_total_size (retention.py).

Rotation never writes lines itself: lines already written stay in the
backup, lines still queued go to the new file in the writer's next write.
So every line is written exactly once, by the writer. A size rotation
happens inside the writer's flush, just before the write that would pass
max_size. A file that is empty when its schedule comes is not rotated: its
due time just moves on, so a size rotation shortly before midnight does not
leave an empty backup at midnight.

Many files due at once (a midnight with thousands of per-host files) are
recorded in the state with one save, then renamed ROTATIONS_PER_PASS at a
time between loop passes, so clients are served and signals handled while
the rotation proceeds. Every step costs in proportion to the files it
touches: backups are known from an index (loghogd/backups.py), not from a
directory listing per file.
"""

import collections
import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Dict, Iterable, List, Optional

from loghogd import safefs
from loghogd.backups import (BackupIndex, Listings, existing_keys, file_mtime, file_size, list_directories,
                             log_directories)
from loghogd.compressor import Compressor, recover
from loghogd.config import Config
from loghogd.facilities import Facilities, Facility
from loghogd.hooks import HookRequest, HookRunner
from loghogd.logfile import FileKey, LogFile
from loghogd.names import archive_path, free_backup_path, parse_backup
from loghogd.retention import Retention
from loghogd.schedule import RotationSchedule, RotationState, due_after, local_time, parse_rotate
from loghogd.stats import Counters
from loghogd.wakeup import NEVER
from loghogd.writer import Writer

log = logging.getLogger('loghogd')

STATE_FILE = 'rotation-state.json'
RETRY_SECONDS = 10.0
STATE_SAVE_INTERVAL = 60.0
"""Changes that are no rotation (a new file's start, an empty file's due time moving on) wait this long."""
ROTATIONS_PER_PASS = 100
STOP_WAIT_SECONDS = 5.0


@dataclass
class Tracked:
    """One log file the rotator watches; `key` is None for loghogd's own log."""
    path: str
    schedule: RotationSchedule
    backup_count: int
    max_age: Optional[float]
    key: Optional[FileKey]
    due: float = NEVER
    max_total_size: Optional[int] = None


@dataclass
class Planned:
    """A rotation recorded in the state whose rename waits for its loop pass."""
    entry: Tracked
    previous: datetime
    reason: str


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
        self.hooks = HookRunner(counters, config.hooks.max_running, self._retain_for)
        self.backups = BackupIndex()
        self.retention = Retention(self.logdir, self.state, self.backups, self.compressor, self.hooks, counters)
        self._tracked: Dict[str, Tracked] = {}
        self._planned: 'collections.OrderedDict[str, Planned]' = collections.OrderedDict()
        self._next_due = NEVER
        self._state_dirty = False
        self._state_save_due = 0.0
        writer.on_new_file = self.track_file
        writer.on_full = self.rotate_full

    # start-up ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """Before serving: finish interrupted work, then rotate what is overdue.

        Each directory is listed once, for recovery, the backup index and
        the per-host files alike.
        """
        if self.state.warning:
            log.warning('%s', self.state.warning)
        self.state.remove_temporary_files()
        listings = list_directories(log_directories(self.logdir, self.internal_log.filename))
        removed = recover(listings, self.compressor, self._compressed)
        self.backups.add_listings(listings, removed)
        if self.internal_log.filename:
            self._track(Tracked(self.internal_log.filename, parse_rotate(self.internal_log.when),
                                self.internal_log.backup_count, None, None), now)
        self._discover(self.facilities, now, listings)
        vanished = self.state.forget_vanished(self._tracked)
        if vanished:
            self._state_dirty = True
            log.info('forgot the rotation times of %d log files that no longer exist', vanished)
        for entry in list(self._tracked.values()):
            self.retention.apply(entry, now)
        self._rotate_due(now)
        self._rename_planned(now)
        self._save_state_if_dirty(now)
        self._state_save_due = now + STATE_SAVE_INTERVAL

    def _discover(self, facilities: Iterable[Facility], now: float, listings: Optional[Listings] = None) -> None:
        """Existing files of configured facilities, which may be due with no traffic.

        Their hosts count toward max_hosts. Each app directory is listed
        at most once (not at all when `listings` has it).
        """
        listings = dict(listings or {})
        for facility in facilities:
            for key in existing_keys(facility, self.logdir, listings):
                if key[1] is not None:
                    self.writer.note_host(*key)
                path = self.writer.path_for(*key)
                if path not in self._tracked:
                    self._track_key(path, key, now)

    # tracking ---------------------------------------------------------------

    def track_file(self, logfile: LogFile) -> None:
        """The writer made a LogFile: learn when it is due."""
        self._track_key(logfile.path, logfile.key, self.clock())

    def _track_key(self, path: str, key: FileKey, now: float) -> None:
        facility = key[0]
        self._track(Tracked(path, facility.rotate, facility.backup_count, facility.max_age, key,
                            max_total_size=facility.max_total_size), now)

    def _track(self, entry: Tracked, now: float) -> None:
        """Due time from the last rotation; a file never rotated starts its period now.

        A file that already exists but was never rotated counts from its
        last change, so a daily file left from yesterday rotates at start-up.
        That start is saved with the next batch, not at once: a flood of new
        hosts must not rewrite the state every second.
        """
        last = self.state.last_rotation(entry.path)
        if last is None:
            last = local_time(min(now, file_mtime(entry.path, now)))
            self.state.record(entry.path, last)
            self._state_dirty = True
        entry.due = NEVER if entry.path in self._planned else due_after(entry.schedule, last)
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
        """When the next file is due (a timestamp; NEVER when none has a schedule)."""
        return self._next_due

    def next_wakeup(self, now: float) -> float:
        """Seconds the loop may sleep: until the next due rotation (or compressor poll); 0 while renames wait."""
        if self._planned:
            return 0.0
        wait = min(self._next_due - now, self.compressor.next_wakeup(), self.hooks.next_wakeup(time.monotonic()))
        if self._state_dirty:
            wait = min(wait, self._state_save_due - now)
        return max(0.0, wait)

    def tick(self, now: float) -> None:
        """Between loop passes: rotate what is due (a share of it per pass), save the state now and then."""
        if now >= self._next_due:
            self._rotate_due(now)
        self._rename_planned(now)
        self.hooks.reap()
        self._save_state_if_dirty(now)

    def reap(self) -> None:
        """SIGCHLD: finish exited compressors and hooks."""
        self.compressor.reap()
        self.hooks.reap()

    def rotate_all(self, now: float) -> None:
        """SIGUSR2 (a test and operator hook): rotate every file that holds lines, now."""
        log.info('rotating every log file now (SIGUSR2)')
        self._plan(list(self._tracked.values()), now, 'requested')
        self._rename_planned(now)
        self._recompute_next_due()

    def rotate_full(self, logfile: LogFile) -> None:
        """The writer's next write would take `logfile` past max_size: rotate it first."""
        now = self.clock()
        entry = self._tracked.get(logfile.path)
        if entry is None:
            self._track_key(logfile.path, logfile.key, now)
            entry = self._tracked[logfile.path]
        if entry.path not in self._planned:
            self._plan([entry], now, 'max_size %d reached' % logfile.max_size)
        planned = self._planned.pop(entry.path, None)
        if planned is not None:
            self._rename(planned, now)
        self._next_due = min(self._next_due, entry.due)

    def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """At exit: give running compressors `timeout` s; renames still waiting are undone in the state."""
        self.compressor.stop(timeout)
        self.hooks.stop(timeout)
        if self._planned:
            log.info('stopping with %d rotations not yet done: those files rotate when next due', len(self._planned))
            for planned in self._planned.values():
                self.state.record(planned.entry.path, planned.previous)
            self._planned.clear()
            self._state_dirty = True
        self._save_state_if_dirty(math.inf)

    # rotating -----------------------------------------------------------------

    def _rotate_due(self, now: float) -> None:
        self._plan([entry for entry in self._tracked.values() if entry.due <= now], now, None)
        self._recompute_next_due()

    def _plan(self, entries: List[Tracked], now: float, reason: Optional[str]) -> None:
        """Record the rotation of `entries` in one state save; their renames wait their pass.

        One fsync'd save for a whole batch keeps a midnight with many files
        from stalling the loop for one disk flush per file; whether a file
        is empty is seen when its turn comes.
        """
        when = local_time(now)
        planned = []
        for entry in entries:
            if entry.path in self._planned:
                continue
            logfile = self._logfile(entry)
            if logfile is not None and logfile.partial:
                log.warning('not rotating %s yet: a write to it is unfinished', entry.path)
                entry.due = now + RETRY_SECONDS
            else:
                previous = self.state.last_rotation(entry.path) or when
                planned.append(Planned(entry, previous, reason or 'scheduled (%s)' % entry.schedule.spec))
                self.state.record(entry.path, when)
        if not planned:
            return
        try:
            self.state.save()
            self._state_dirty = False
        except OSError as error:
            log.error('cannot save the rotation state %s: %s; rotating nothing, trying again in %.0f s',
                      self.state.path, error, RETRY_SECONDS)
            for plan in planned:
                self.state.record(plan.entry.path, plan.previous)
                plan.entry.due = now + RETRY_SECONDS
            return
        for plan in planned:
            plan.entry.due = NEVER
            self._planned[plan.entry.path] = plan
        if len(self._planned) > ROTATIONS_PER_PASS:
            log.info('rotating %d log files, %d per loop pass', len(self._planned), ROTATIONS_PER_PASS)

    def _rename_planned(self, now: float) -> None:
        """Rename the next ROTATIONS_PER_PASS files whose rotation is recorded."""
        for _ in range(min(ROTATIONS_PER_PASS, len(self._planned))):
            _path, planned = self._planned.popitem(last=False)
            self._rename(planned, now)

    def _logfile(self, entry: Tracked) -> Optional[LogFile]:
        return self.writer.get(entry.key) if entry.key is not None else None

    def _rename(self, planned: Planned, now: float) -> None:
        entry = self._tracked.get(planned.entry.path, planned.entry)
        logfile = self._logfile(entry)
        if logfile is not None and logfile.partial:
            self._undo(planned, entry, now, 'a write to it is unfinished')
            return
        if (logfile.current_size() if logfile is not None else file_size(entry.path)) == 0:
            entry.due = due_after(entry.schedule, self.state.last_rotation(entry.path))
            self._next_due = min(self._next_due, entry.due)
            return
        stamp, backup = free_backup_path(entry.path, planned.previous, os.path.lexists)
        try:
            safefs.rename_file(self.logdir, entry.path, backup)
        except safefs.UnsafePath as error:
            self.counters.unsafe_paths_refused += 1
            entry.due = due_after(entry.schedule, self.state.last_rotation(entry.path))
            log.error('not rotating %s: %s', entry.path, error.strerror)
            return
        except OSError as error:
            self._undo(planned, entry, now, str(error))
            return
        if logfile is not None:
            logfile.renamed()
        self.backups.add(entry.path, stamp, backup)
        self.counters.rotations += 1
        entry.due = due_after(entry.schedule, self.state.last_rotation(entry.path))
        self._next_due = min(self._next_due, entry.due)
        log.info('rotated %s to %s: %s', entry.path, os.path.basename(backup), planned.reason)
        self.compressor.submit(backup, self._compressed)
        self.retention.apply(entry, now)

    def _undo(self, planned: Planned, entry: Tracked, now: float, why: str) -> None:
        """The rename cannot happen now: the state forgets it, the file is tried again soon."""
        log.error('cannot rotate %s: %s; trying again in %.0f s', entry.path, why, RETRY_SECONDS)
        self.state.record(entry.path, planned.previous)
        self._state_dirty = True
        entry.due = now + RETRY_SECONDS
        self._next_due = min(self._next_due, entry.due)

    def _compressed(self, plain: str, hook_done: bool = False) -> None:
        """A compression (or a hook) ended: the index learns the archive, the hook runs, retention may delete."""
        backup = parse_backup(os.path.basename(plain))
        if backup is None:
            return
        live = os.path.join(os.path.dirname(plain), backup.live)
        archive = archive_path(plain, self.compressor.extension)
        if not os.path.lexists(plain) and os.path.lexists(archive):
            self.backups.replace(live, backup.stamp, plain, archive)
        entry = self._tracked.get(live)
        if entry is not None and entry.key is not None and not hook_done:
            self.hooks.run_on_final(entry.key[0], entry.key[1], (archive, plain))
        if entry is not None:
            self.retention.apply(entry, self.clock())

    def _retain_for(self, hook: HookRequest) -> None:
        """A hook ended: retention may now delete the backup it had to leave."""
        self._compressed(hook.backup, hook_done=True)

    def _save_state_if_dirty(self, now: float) -> None:
        if not self._state_dirty or now < self._state_save_due:
            return
        try:
            self.state.save()
            self._state_dirty = False
        except OSError as error:
            log.error('cannot save the rotation state %s: %s', self.state.path, error)
        self._state_save_due = now + STATE_SAVE_INTERVAL
