"""What is on disk: the log files and backups found at start, and an index of backups kept current.

A pass that rotates thousands of per-host files must cost in proportion to
the files it touches, not to files times directory size. So each directory
that holds log files is listed once at start-up, and the index is kept up to
date by rotation (a new backup), compression (a plain backup becomes its
archive) and retention (deleted backups). A backup put there by someone
else while loghogd runs is seen at the next start.
"""

import os
from typing import Callable, Collection, Dict, List, Optional, Set

from loghogd.facilities import Facility
from loghogd.logfile import FileKey
from loghogd.names import backup_path, log_path, parse_backup, split_host_file, stamp_time, stamps_in_time_order
from loghogd.writer import safe_hostname

Listings = Dict[str, List[str]]
"""Directory -> the names in it, from one listing."""


def list_directories(directories: Collection[str]) -> Listings:
    """One sorted listing of each directory that can be read."""
    listings = {}
    for directory in directories:
        try:
            listings[directory] = sorted(os.listdir(directory))
        except OSError:
            continue
    return listings


def log_directories(logdir: str, internal_log: Optional[str]) -> List[str]:
    """Where log files and backups live: logdir, each app directory in it, and the daemon's own log's."""
    directories = {logdir}
    try:
        directories.update(entry.path for entry in os.scandir(logdir) if entry.is_dir(follow_symlinks=False))
    except OSError:
        pass
    if internal_log:
        directories.add(os.path.dirname(internal_log))
    return sorted(directories)


def existing_keys(facility: Facility, logdir: str, listings: Listings) -> List[FileKey]:
    """The files of `facility` that exist; its app directory is listed into `listings` unless there already."""
    if not facility.file_per_host:
        key: FileKey = (facility, None)
        return [key] if os.path.exists(log_path(logdir, facility.app_id, facility.module)) else []
    directory = os.path.join(logdir, facility.app_id)
    if directory not in listings:
        listings.update(list_directories([directory]))
    keys = []
    for name in listings.get(directory, ()):
        split = split_host_file(name)
        if split is not None and split[1] == facility.module and safe_hostname(split[0]) == split[0]:
            keys.append((facility, split[0]))
    return keys


def file_mtime(path: str, default: float = 0.0) -> float:
    """The file's modification time, or `default` when it cannot be read."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return default


def file_size(path: str) -> int:
    """The file's size, 0 when it cannot be read."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class BackupIndex:
    """Live log file -> stamp -> the paths of that backup (plain, archive or both after a crash)."""

    def __init__(self) -> None:
        self._files: Dict[str, Dict[str, Set[str]]] = {}

    def add_listings(self, listings: Listings, removed: Collection[str] = ()) -> None:
        """Index every finished backup in `listings`, except the paths in `removed`."""
        for directory, names in listings.items():
            for name in names:
                backup = parse_backup(name)
                path = os.path.join(directory, name)
                if backup is not None and not backup.temporary and path not in removed:
                    self.add(os.path.join(directory, backup.live), backup.stamp, path)

    def add(self, live: str, stamp: str, path: str) -> None:
        self._files.setdefault(os.path.normpath(live), {}).setdefault(stamp, set()).add(path)

    def replace(self, live: str, stamp: str, old: str, new: str) -> None:
        """A compressor replaced backup `old` by its archive `new`."""
        paths = self._files.get(os.path.normpath(live), {}).get(stamp)
        if paths is not None:
            paths.discard(old)
            paths.add(new)

    def stamps(self, live: str) -> List[str]:
        """The stamps of `live`'s backups, oldest first."""
        return stamps_in_time_order(self._files.get(os.path.normpath(live), {}))

    def existing_stamps(self, live: str) -> List[str]:
        """stamps(), after forgetting backups whose files someone else deleted (one lstat per file)."""
        for stamp in self.stamps(live):
            if not any(os.path.lexists(path) for path in self._files[os.path.normpath(live)][stamp]):
                self.take(live, stamp)
        return self.stamps(live)

    def paths(self, live: str, stamp: str) -> List[str]:
        """The paths of one backup of `live`, left in the index."""
        return sorted(self._files.get(os.path.normpath(live), {}).get(stamp, ()))

    def beyond_total_size(self, live: str, stamps: List[str], cap: int,
                          compressing: Callable[[str], bool]) -> List[str]:
        """The oldest of `stamps` that must go so that `live` and its newer backups fit in `cap` bytes.

        A backup still being compressed (`compressing(plain path)`) counts once compressed, at the size it keeps.
        """
        total = file_size(live)
        for index in range(len(stamps) - 1, -1, -1):
            if not compressing(backup_path(live, stamps[index])):
                total += sum(file_size(path) for path in self.paths(live, stamps[index]))
            if total > cap:
                return stamps[:index + 1]
        return []

    def take(self, live: str, stamp: str) -> List[str]:
        """Forget one backup of `live`; return its paths (for deletion)."""
        key = os.path.normpath(live)
        stamps = self._files.get(key, {})
        paths = stamps.pop(stamp, set())
        if not stamps:
            self._files.pop(key, None)
        return sorted(paths)


def doomed_stamps(stamps: List[str], backup_count: int, max_age: Optional[float], last_rotation: float,
                  now: float) -> List[str]:
    """The backups retention deletes: beyond `backup_count`, and older than `max_age`.

    A backup's age counts from its last line, that is the next backup's
    stamp (or the last rotation for the newest).
    """
    doomed = set(stamps[:max(0, len(stamps) - backup_count)])
    if max_age is not None and stamps:
        ends = [stamp_time(stamp) for stamp in stamps[1:]] + [last_rotation]
        doomed.update(stamp for stamp, end in zip(stamps, ends) if end < now - max_age)
    return sorted(doomed)

