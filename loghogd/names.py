"""Every file name loghogd makes or parses: log files, per-host files, backups, archives.

One module, so that changing a rule (the time stamp of a backup, say) is one
change, and so that no two rules can produce the same name:

- a facility's file is `<logdir>/<app_id>/<module>.log`;
- a per-host file is `<logdir>/<app_id>/<host>@<module>.log`. Neither a
  module (letters, digits, '.', '_', '-') nor a safe host name can hold
  '@', so a per-host file is never another facility's file;
- a backup is `<log file>.<stamp>`, compressed `<backup>.xz` (.gz, .bz2),
  written as `<backup>.xz.tmp` until its compressor succeeds. The stamp is
  the start of the backup's period in UTC, `YYYY-MM-DD-HH-MM-SS-ffffffZ`,
  so names sort in time order across a DST change; stamps without the `Z`,
  in local time, are those of loghogd before 1.1 and are still recognised.
"""

import os
import re
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, List, NamedTuple, Optional, Tuple

LOG_SUFFIX = '.log'
HOST_SEPARATOR = '@'
ARCHIVE_EXTENSIONS = {'xz': '.xz', 'zstd': '.zst', 'gzip': '.gz', 'bzip2': '.bz2'}
ARCHIVE_TEMP_SUFFIX = '.tmp'
STAMP_FORMAT = '%Y-%m-%d-%H-%M-%S-%f'
UTC_MARK = 'Z'
STAMP_PATTERN = r'\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{6}' + UTC_MARK + '?'
_BACKUP = re.compile(r'(?P<live>.+\.log)\.(?P<stamp>' + STAMP_PATTERN + r')(?:(?P<extension>\.xz|\.zst|\.gz|\.bz2)'
                     r'(?P<temporary>' + re.escape(ARCHIVE_TEMP_SUFFIX) + r')?)?\Z', re.S)


def log_file_name(module: str, host: Optional[str] = None) -> str:
    """`<module>.log`, or `<host>@<module>.log` for a per-host file (host already made safe)."""
    return module + LOG_SUFFIX if host is None else host + HOST_SEPARATOR + module + LOG_SUFFIX


def log_path(logdir: str, app_id: str, module: str, host: Optional[str] = None) -> str:
    return os.path.join(logdir, app_id, log_file_name(module, host))


def split_host_file(file_name: str) -> Optional[Tuple[str, str]]:
    """(host, module) of a per-host file name, or None when `file_name` is none."""
    host, separator, rest = file_name.partition(HOST_SEPARATOR)
    if not separator or not host or not rest.endswith(LOG_SUFFIX) or len(rest) == len(LOG_SUFFIX):
        return None
    return host, rest[:-len(LOG_SUFFIX)]


def backup_stamp(when: datetime) -> str:
    """The stamp of a backup whose period began at `when` (naive: local time), in UTC."""
    return when.astimezone(timezone.utc).strftime(STAMP_FORMAT) + UTC_MARK


def stamp_time(stamp: str) -> float:
    """The timestamp a backup's stamp stands for; an old stamp without `Z` is local time."""
    if stamp.endswith(UTC_MARK):
        return datetime.strptime(stamp[:-1], STAMP_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    return datetime.strptime(stamp, STAMP_FORMAT).timestamp()


def stamps_in_time_order(stamps: Iterable[str]) -> List[str]:
    """Oldest first, old local stamps and UTC ones alike; only an old one costs a conversion."""
    return sorted(stamps, key=_utc_text)


def _utc_text(stamp: str) -> str:
    if stamp.endswith(UTC_MARK):
        return stamp[:-1]
    return datetime.strptime(stamp, STAMP_FORMAT).astimezone(timezone.utc).strftime(STAMP_FORMAT)


def backup_path(log_file: str, stamp: str) -> str:
    return '%s.%s' % (log_file, stamp)


def free_backup_path(log_file: str, start: datetime, taken: Callable[[str], bool]) -> Tuple[str, str]:
    """(stamp, path) of the backup of `log_file` for a period that began at `start`.

    While `taken(path)` says that name (or one of its archives) exists, the
    next microsecond is tried, so rotations in one microsecond never clash.
    """
    while True:
        stamp = backup_stamp(start)
        path = backup_path(log_file, stamp)
        if not any(taken(archive_path(path, extension)) for extension in ('', *ARCHIVE_EXTENSIONS.values())):
            return stamp, path
        start += timedelta(microseconds=1)


def archive_path(backup: str, extension: str) -> str:
    return backup + extension


def archive_temp_path(backup: str, extension: str) -> str:
    """Where a compressor writes until it succeeds: never a final archive's name."""
    return backup + extension + ARCHIVE_TEMP_SUFFIX


class Backup(NamedTuple):
    """A backup's name taken apart: its live file's name, stamp, archive extension, and whether half-written."""
    live: str
    stamp: str
    extension: str
    temporary: bool

    @property
    def plain(self) -> bool:
        return not self.extension and not self.temporary


def parse_backup(file_name: str) -> Optional[Backup]:
    """`file_name` as a Backup, or None when it is no backup name."""
    match = _BACKUP.match(file_name)
    if match is None:
        return None
    return Backup(match.group('live'), match.group('stamp'), match.group('extension') or '',
                  match.group('temporary') is not None)
