"""Files in directories another account may write, reached without following its links.

With [main] user set, loghogd's user owns the log, work and run
directories, and root works in them at start-up; with no user set, a
symbolic link in the log directory would still lead the daemon out of it.
So every path below a trusted directory (one the configuration names) is
walked one component at a time through directory descriptors with
O_NOFOLLOW: no link is followed, no component can be swapped between a
check and its use, and what is opened must be a regular file with one
name (a hard link to another file is refused as well).
"""

import errno
import os
import stat
from typing import List, Optional, Tuple

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a planted FIFO must not hang the daemon; it changes nothing for a regular file.
FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafePath(OSError):
    """A link, or something else that is not loghogd's own, where its file or directory belongs."""

    def __init__(self, path: str, found: str, wanted: str) -> None:
        super().__init__(errno.ELOOP, '%s is %s where a %s belongs; loghogd does not follow or touch it'
                         % (path, found, wanted), path)


def split_beneath(root: str, path: str) -> Tuple[str, List[str], str]:
    """(trusted directory, components below it, file name) of `path`.

    A path outside `root` trusts its own directory: only its last
    component is checked.
    """
    root, path = os.path.abspath(root), os.path.abspath(path)
    directory, name = os.path.split(path)
    relative = os.path.relpath(directory, root)
    if relative == os.curdir:
        return root, [], name
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return directory, [], name
    return root, relative.split(os.sep), name


def beneath(root: str, path: str) -> bool:
    """Whether `path` names something strictly inside `root` (by its words; links are for open_file)."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return relative != os.curdir and relative != os.pardir and not relative.startswith(os.pardir + os.sep)


def _what_is(dir_fd: int, name: str) -> str:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return 'something that vanished'
    if stat.S_ISLNK(mode):
        return 'a symbolic link'
    if stat.S_ISDIR(mode):
        return 'a directory'
    if stat.S_ISREG(mode):
        return 'a regular file'
    return 'a special file'


def open_directory(root: str, parts: List[str], create_mode: Optional[int] = None) -> int:
    """A descriptor of `root`/`parts`, each part a real directory (made with `create_mode` if missing)."""
    if create_mode is not None:
        os.makedirs(root, create_mode, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            try:
                child = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    os.mkdir(part, create_mode, dir_fd=fd)
                except FileExistsError:
                    pass
                child = _open_child_directory(fd, root, parts[:index + 1])
            except OSError as error:
                if error.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise UnsafePath(os.path.join(root, *parts[:index + 1]), _what_is(fd, part),
                                     'directory') from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child_directory(fd: int, root: str, parts: List[str]) -> int:
    try:
        return os.open(parts[-1], DIRECTORY_FLAGS, dir_fd=fd)
    except OSError as error:
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            raise UnsafePath(os.path.join(root, *parts), _what_is(fd, parts[-1]), 'directory') from None
        raise


def open_file(root: str, path: str, flags: int, mode: int = 0o640, create_mode: Optional[int] = None) -> int:
    """Open the regular file `path` below `root`, following no link; missing directories made with `create_mode`."""
    top, parts, name = split_beneath(root, path)
    dir_fd = open_directory(top, parts, create_mode)
    try:
        fd = os.open(name, flags | FILE_FLAGS, mode, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePath(path, _what_is(dir_fd, name), 'regular file') from None
        raise
    finally:
        os.close(dir_fd)
    try:
        check_regular(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular(fd: int, path: str) -> os.stat_result:
    """The status of `fd`; UnsafePath unless it is a regular file with a single name."""
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise UnsafePath(path, 'a special file' if not stat.S_ISDIR(status.st_mode) else 'a directory',
                         'regular file')
    if status.st_nlink > 1:
        raise UnsafePath(path, 'a file with %d hard links' % status.st_nlink, 'regular file of its own')
    return status


def rename_file(root: str, path: str, new_path: str) -> None:
    """Rename the regular file `path` below `root` to `new_path` in the same directory, following no link."""
    top, parts, name = split_beneath(root, path)
    dir_fd = open_directory(top, parts)
    try:
        status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(status.st_mode):
            raise UnsafePath(path, _what_is(dir_fd, name), 'regular file')
        os.rename(name, os.path.basename(new_path), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def real_directory(root: str, path: str) -> None:
    """UnsafePath unless `path` below `root` is reached through real directories only."""
    top, parts, name = split_beneath(root, path)
    os.close(open_directory(top, parts + [name]))
