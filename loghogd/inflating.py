"""Undoing the zlib flag with python3-isal where it is installed: its inflate takes half zlib's time.

A batch of 500 compressed records costs loghogd about 0.55 µs per record
to inflate with zlib, a quarter of what the rest of the batch costs, and
0.24 µs with isal (docs/benchmarks.md). Debian 13 ships python3-isal and
Debian 12 does not, so zlib stays the fallback and the reference:
isal only sees a stream whose two-byte header zlib would take (isal also
takes a window size zlib refuses), and tests/test_inflating.py proves with
hypothesis that both give the same bytes or the same rejection for any
payload.
"""

from typing import Callable

from loghog import protocol
from loghog.protocol import DEFAULT_MAX_MESSAGE_SIZE, FrameError

try:
    import isal
    from isal import isal_zlib
except ImportError:  # Debian 12 has no python3-isal
    isal = isal_zlib = None

ZLIB_DEFLATE = 8
MAX_WINDOW_BITS = 7  # the header's CINFO: a window of 2 ** (8 + 7) bytes
PRESET_DICTIONARY = 0x20

INFLATER_NAME = 'isal %s' % getattr(isal, '__version__', '?') if isal_zlib is not None else 'zlib (stdlib)'
"""What loghogd inflates with, as --status and the benchmarks name it."""


def zlib_takes_header(payload: bytes) -> bool:
    """Whether `payload` starts with a zlib header that zlib would inflate (RFC 1950, no preset dictionary)."""
    if len(payload) < 2:
        return False
    method, flags = payload[0], payload[1]
    return (method & 0x0f == ZLIB_DEFLATE and method >> 4 <= MAX_WINDOW_BITS and not flags & PRESET_DICTIONARY
            and (method << 8 | flags) % 31 == 0)


def _inflate_isal(payload: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """protocol.inflate with isal's inflater for a header zlib takes; zlib decides every other payload.

    A stream isal refuses goes to zlib too, which decides why: a broken
    stream that also inflates past `max_size` may be found broken by one
    library and oversized by the other, as each stops at a different point.
    Only a refused stream pays for the second inflate.
    """
    if zlib_takes_header(payload):
        try:
            return protocol.inflate(payload, max_size, isal_zlib.decompressobj, (isal_zlib.error,))
        except FrameError:
            pass
    return protocol.inflate(payload, max_size)


inflate: Callable[..., bytes] = _inflate_isal if isal_zlib is not None else protocol.inflate
