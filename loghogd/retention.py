"""Retention: deleting the backups a log file may no longer keep.

After each rotation, compression or hook, the rotator asks what to delete
beyond backup_count, max_age and max_total_size. A backup still being
compressed or handed to a post_rotate hook waits for a later turn, and
nothing is deleted in an app directory that became a link. Kept apart from
the rotator (loghogd/rotation.py), which decides when files rotate.
"""

import logging
import os
from typing import TYPE_CHECKING

from loghogd import safefs
from loghogd.backups import BackupIndex, doomed_stamps
from loghogd.compressor import Compressor, unlink_quietly
from loghogd.hooks import HookRunner
from loghogd.names import backup_path
from loghogd.schedule import RotationState
from loghogd.stats import Counters

if TYPE_CHECKING:
    from loghogd.rotation import Tracked

log = logging.getLogger('loghogd')


class Retention:
    """Deletes a tracked file's backups beyond what its facility keeps."""

    def __init__(self, logdir: str, state: RotationState, backups: BackupIndex, compressor: Compressor,
                 hooks: HookRunner, counters: Counters) -> None:
        self.logdir = logdir
        self.state = state
        self.backups = backups
        self.compressor = compressor
        self.hooks = hooks
        self.counters = counters

    def apply(self, entry: 'Tracked', now: float) -> None:
        """Delete backups beyond backup_count, older than max_age or beyond max_total_size.

        One being compressed or handed to a hook waits. Never in an app directory become a link.
        """
        if len(self.backups.stamps(entry.path)) <= entry.backup_count and not (entry.max_age or entry.max_total_size):
            return
        try:
            if entry.key is not None:
                safefs.real_directory(self.logdir, os.path.dirname(entry.path))
        except OSError:
            return
        stamps = self.backups.existing_stamps(entry.path)
        last = self.state.last_rotation(entry.path)
        doomed = doomed_stamps(stamps, entry.backup_count, entry.max_age, last.timestamp() if last else now, now)
        kept = [stamp for stamp in stamps if stamp not in doomed]
        too_big = [] if entry.max_total_size is None else self.backups.beyond_total_size(
            entry.path, kept, entry.max_total_size, self.compressor.busy_with)
        for stamp in sorted(set(doomed) | set(too_big)):
            if self.compressor.busy_with(backup_path(entry.path, stamp)) or any(
                    self.hooks.busy_with(path) for path in self.backups.paths(entry.path, stamp)):
                continue
            for path in self.backups.take(entry.path, stamp):
                unlink_quietly(path)
            self.counters.backups_deleted_total_size += stamp in too_big
            log.info('deleted backup %s.%s (%s)', os.path.basename(entry.path), stamp,
                     'max_total_size %d' % entry.max_total_size if stamp in too_big else
                     'backup_count %d, max_age %s s' % (entry.backup_count, entry.max_age))
