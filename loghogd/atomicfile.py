"""Replacing a file whole: a reader never sees half of it, and a durable one survives a crash."""

import contextlib
import os
import tempfile
from typing import Optional


def fsync_directory(directory: str) -> None:
    """Make a new name or a rename in `directory` survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes, durable: bool = False, mode: int = 0o640,
                 prefix: Optional[str] = None) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`.

    The temporary name starts with `prefix` (default '.<name>.') and ends in
    '.tmp', so it never matches what a reader of `path` looks for. With
    `durable`, the data and the rename are fsync'd, for state a crash must
    not lose.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=prefix or '.%s.' % os.path.basename(path), suffix='.tmp',
                                     dir=directory)
    try:
        with os.fdopen(fd, 'wb') as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if durable:
        fsync_directory(directory)
