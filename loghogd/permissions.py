"""Per-facility file_mode, dir_mode and file_group: parsed once, applied to what loghogd creates.

Modes are applied with fchmod on an open descriptor, so the umask loghogd
runs with (027) does not narrow them and no link is followed; a group is
set with fchown, which needs the daemon's user to be a member of it.
"""

import grp
import os
import re
import stat
from typing import Optional

from loghogd import safefs

FILE_MODE_NEEDED = 0o600
DIR_MODE_NEEDED = 0o700
_OCTAL = re.compile(r'0?[0-7]{3}')


def parse_mode(raw: str, needed: int) -> int:
    """An octal mode such as 0640: permission bits only, and at least `needed` (what loghogd itself uses)."""
    if not _OCTAL.fullmatch(raw):
        raise ValueError('%r is not an octal mode such as 0640 (permission bits only)' % raw)
    mode = int(raw, 8)
    if mode & needed != needed:
        raise ValueError('%s leaves out %s, which loghogd needs for itself' % (raw, format(needed, '04o')))
    return mode


def parse_group(raw: str) -> Optional[int]:
    """A group name or number that exists on this host, as its gid; None if empty."""
    if not raw:
        return None
    try:
        return grp.getgrnam(raw).gr_gid
    except KeyError:
        pass
    if raw.isdigit():
        return int(raw)
    raise ValueError('no group %r on this host' % raw)


def apply_to_directory(root: str, path: str, mode: Optional[int], gid: Optional[int]) -> None:
    """The directory of the file `path` below `root` (an app's) gets `mode` and `gid`, reached without links."""
    top, parts, _name = safefs.split_beneath(root, path)
    dir_fd = safefs.open_directory(top, parts)
    try:
        apply(dir_fd, mode, gid)
    finally:
        os.close(dir_fd)


def apply(fd: int, mode: Optional[int], gid: Optional[int]) -> None:
    """Give the open file or directory `fd` the configured mode and group, where they differ."""
    status = os.fstat(fd)
    if gid is not None and status.st_gid != gid:
        os.fchown(fd, -1, gid)
    if mode is not None and stat.S_IMODE(status.st_mode) != mode:
        os.fchmod(fd, mode)
