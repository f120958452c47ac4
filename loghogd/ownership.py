"""What loghogd's unprivileged user is given before the switch, and what stays root's."""

import logging
import os
import stat
from typing import List, Optional

from loghogd import safefs
from loghogd.daemon import Account, DaemonError

log = logging.getLogger('loghogd')

# Directories other programs share: handing one of them to loghogd's user
# would give that user the system, so they are refused as its own.
SHARED_DIRECTORIES = frozenset(('/', '/run', '/var/run', '/var', '/var/lib', '/var/log', '/var/cache', '/tmp',
                                '/var/tmp', '/etc', '/usr', '/home', '/root', '/srv', '/opt', '/dev', '/proc'))
RUNDIR_MODE = 0o1770


def hand_over(account: Account, trees: List[str], paths: List[Optional[str]], rundir: str, pidfile: str) -> None:
    """Give the account what it writes: `trees` with all they hold, `paths` alone, the files of `rundir`.

    The work directory holds state root wrote during start-up (journals,
    state files) that the daemon rewrites later; the log directory itself
    is in `paths`, not its possibly huge tree. Nothing is reached through
    a link: trees are walked with directory descriptors (os.fwalk) and
    owners changed with follow_symlinks=False.

    `rundir` stays root's, group-writable for the account's group and
    sticky: the daemon makes and replaces its own status files there, but
    cannot remove or replace the root-owned PID file, which root's init
    script trusts to name the process to signal. Raises DaemonError for a
    directory that is not loghogd's own.
    """
    for path in trees + paths + [rundir]:
        if path and os.path.realpath(path) in SHARED_DIRECTORIES:
            raise DaemonError('%s is a shared system directory; with [main] user set, loghogd must have '
                              'directories of its own (e.g. /run/loghogd, /var/lib/loghogd, /var/log/loghogd), '
                              'because it gives them to that user' % path)
    for path in trees + paths:
        if path and safefs.beneath(path, pidfile):
            log.warning('the PID file %s lies in %s, which user %s owns and can replace it in; put it in '
                        'the rundir %s', pidfile, path, account.name, rundir)
    for tree in trees:
        _give(tree, account)
        _give_tree(tree, account, pidfile)
    for path in paths:
        if path and os.path.lexists(path):
            _give(path, account)
    os.chown(rundir, 0, account.gid, follow_symlinks=False)
    os.chmod(rundir, RUNDIR_MODE)
    _give_tree(rundir, account, pidfile)


def _give(path: str, account: Account, dir_fd: Optional[int] = None) -> None:
    group = _group_to_give(path, account.gid)
    os.chown(path if dir_fd is None else os.path.basename(path), account.uid, group, dir_fd=dir_fd,
             follow_symlinks=False)


def _give_tree(tree: str, account: Account, keep: str) -> None:
    """Everything below `tree` but `keep`, walked through directory descriptors."""
    keep = os.path.abspath(keep)
    for top, directories, files, top_fd in os.fwalk(tree):
        for name in directories + files:
            path = os.path.join(top, name)
            if os.path.abspath(path) != keep:
                _give(path, account, top_fd)


def _group_to_give(path: str, gid: int) -> int:
    """`gid`, or -1 (keep the group) for a setgid directory and what it holds.

    A log directory set to group adm with the setgid bit is the Debian way
    to let administrators read logs: every file made in it takes that group,
    and giving the directory to loghogd's own group would undo it.
    """
    for directory in (path, os.path.dirname(path)):
        try:
            status = os.lstat(directory)
        except OSError:
            continue
        if stat.S_ISDIR(status.st_mode) and status.st_mode & stat.S_ISGID:
            return -1
    return gid
