"""The LogHog wire protocol, version 1 (and the 1.1 acknowledgement extension).

Sans-I/O: bytes go in, frames come out, and the caller owns every socket.
The client and the server both import this module, so the two cannot drift.
Standard library only, so that the client package installs alone.
"""

import hashlib
import hmac
import json
import struct
import zlib
from typing import Callable, List, Optional, Tuple, Union

VERSION = 1
HEADER = struct.Struct('!LL')
HEADER_SIZE = HEADER.size
ACK_PAYLOAD = struct.Struct('!Q')

FLAG_ZLIB = 0x01
FLAG_ACK_REQUEST = 0x02
FLAG_ACK = 0x04
CLIENT_FLAGS = FLAG_ZLIB | FLAG_ACK_REQUEST
SERVER_FLAGS = FLAG_ACK

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
MAX_UDP_PAYLOAD = 65507

Frame = Tuple[int, bytes]
"""(flags, payload) with the payload exactly as it was on the wire."""


class FrameError(ValueError):
    """A peer broke the framing; `reason` is a short token for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _check_header(length: int, flags: int, max_size: int, allowed_flags: int) -> None:
    if length > max_size:
        raise FrameError('oversized', 'frame of %d bytes is over the limit of %d' % (length, max_size))
    if flags & ~allowed_flags:
        raise FrameError('reserved_flags', 'frame sets reserved flag bits 0x%08x' % (flags & ~allowed_flags))


class StreamDecoder:
    """Turns a byte stream, split or joined any way, into whole frames.

    Cost stays linear in the bytes fed: a partial frame waits in one buffer
    that is only appended to, and its header is checked against the limit
    before any of its payload is kept. After a framing error the decoder is
    dead (`error` is set) and the caller should drop the connection; frames
    completed before the error are still returned.
    """

    __slots__ = ('max_size', 'allowed_flags', 'error', '_pending', '_need')

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, allowed_flags: int = CLIENT_FLAGS) -> None:
        self.max_size = max_size
        self.allowed_flags = allowed_flags
        self.error: Optional[FrameError] = None
        self._pending = bytearray()
        self._need = HEADER_SIZE

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a frame not yet complete (a truncated frame at EOF)."""
        return len(self._pending)

    def feed(self, data: bytes) -> List[Frame]:
        """Return every frame completed by `data`, in order; maybe none."""
        if self.error is not None:
            return []
        frames: List[Frame] = []
        pos = self._complete_pending(data, frames) if self._pending else 0
        if pos < 0:
            return frames
        unpack_from = HEADER.unpack_from
        append = frames.append
        max_size = self.max_size
        allowed = self.allowed_flags
        refused = ~allowed
        end = len(data)
        need = HEADER_SIZE
        try:
            while end - pos >= HEADER_SIZE:
                length, flags = unpack_from(data, pos)
                if length > max_size or flags & refused:
                    _check_header(length, flags, max_size, allowed)
                start = pos + HEADER_SIZE
                stop = start + length
                if stop > end:
                    need = stop - pos
                    break
                append((flags, data[start:stop]))
                pos = stop
        except FrameError as error:
            self.error = error
            return frames
        if pos < end:
            self._pending += memoryview(data)[pos:]
        self._need = need
        return frames

    def _complete_pending(self, data: bytes, frames: List[Frame]) -> int:
        """Add to the held partial frame only what it lacks from `data`, so no byte is copied twice.

        Returns where in `data` the next frame starts, the held one (when
        whole) appended to `frames`, or -1 when `data` ended first.
        """
        pending = self._pending
        view = memoryview(data)
        pos = 0
        if len(pending) < HEADER_SIZE:
            pos = min(HEADER_SIZE - len(pending), len(data))
            pending += view[:pos]
            if len(pending) < HEADER_SIZE:
                return -1
            length, flags = HEADER.unpack_from(pending)
            try:
                _check_header(length, flags, self.max_size, self.allowed_flags)
            except FrameError as error:
                self.error = error
                self._pending = bytearray()
                return -1
            self._need = HEADER_SIZE + length
        take = min(self._need - len(pending), len(data) - pos)
        pending += view[pos:pos + take]
        if len(pending) < self._need:
            return -1
        frames.append((HEADER.unpack_from(pending)[1], bytes(memoryview(pending)[HEADER_SIZE:])))
        self._pending = bytearray()
        self._need = HEADER_SIZE
        return pos + take


def decode_datagram(data: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                    allowed_flags: int = CLIENT_FLAGS) -> Frame:
    """One datagram is exactly one frame; raise FrameError otherwise."""
    if len(data) < HEADER_SIZE:
        raise FrameError('truncated', 'datagram of %d bytes is shorter than a frame header' % len(data))
    length, flags = HEADER.unpack_from(data)
    _check_header(length, flags, max_size, allowed_flags)
    if length != len(data) - HEADER_SIZE:
        raise FrameError('bad_length', 'datagram holds %d payload bytes but its header says %d'
                         % (len(data) - HEADER_SIZE, length))
    return flags, data[HEADER_SIZE:]


def inflate(payload: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE, decompressobj: Callable = zlib.decompressobj,
            errors: Tuple[type, ...] = (zlib.error,)) -> bytes:
    """Undo the zlib flag, stopping at `max_size` so a zip bomb costs no more.

    `decompressobj` may be another library's zlib-compatible inflater that
    raises `errors` on a bad stream (loghogd.inflating).
    """
    inflater = decompressobj()
    try:
        data = inflater.decompress(payload, max_size + 1)
    except errors as error:
        raise FrameError('bad_zlib', 'payload is not a valid zlib stream: %s' % error) from None
    if len(data) > max_size:
        raise FrameError('oversized', 'compressed payload inflates past the limit of %d bytes' % max_size)
    if not inflater.eof:
        raise FrameError('bad_zlib', 'zlib stream is truncated')
    return data


def encode_frame(payload: bytes, flags: int = 0) -> bytes:
    """Header plus payload, the way every client sends a frame."""
    return HEADER.pack(len(payload), flags) + payload


def encode_ack(seq: int) -> bytes:
    """The server's acknowledgement: every record up to `seq` is handled."""
    return encode_frame(ACK_PAYLOAD.pack(seq), FLAG_ACK)


def decode_ack(payload: bytes) -> int:
    """The highest acknowledged sequence number in an ACK frame's payload."""
    if len(payload) != ACK_PAYLOAD.size:
        raise FrameError('bad_ack', 'ACK payload must be %d bytes, not %d' % (ACK_PAYLOAD.size, len(payload)))
    return ACK_PAYLOAD.unpack(payload)[0]


def _as_bytes(secret: Union[str, bytes]) -> bytes:
    return secret if isinstance(secret, bytes) else secret.encode('utf-8')


def sign(secret: Union[str, bytes], app_id: str, module: str, stamp: int, nsecs: int, body: str) -> str:
    """Lowercase hex HMAC-MD5 over the decoded fields, as the 0.7 client makes it."""
    message = ('%s%s%s%s%s' % (app_id, module, stamp, nsecs, body)).encode('utf-8', 'surrogatepass')
    return hmac.new(_as_bytes(secret), message, hashlib.md5).hexdigest()


def signature_matches(secret: Union[str, bytes], app_id: str, module: str, stamp: int, nsecs: int,
                      body: str, signature: str) -> bool:
    """Constant-time check of a received signature."""
    expected = sign(secret, app_id, module, stamp, nsecs, body)
    return hmac.compare_digest(expected.encode('ascii'), signature.encode('utf-8', 'surrogatepass'))


def encode_payload(app_id: str, module: str, stamp: int, nsecs: int, hostname: str, body: str,
                   secret: Union[str, bytes, None] = None, client_id: Optional[str] = None,
                   seq: Optional[int] = None, caps: Optional[str] = None) -> bytes:
    """The JSON payload with the 0.7 client's key order and separators; `caps` asks for capabilities (1.2)."""
    message = {'version': VERSION, 'app_id': app_id, 'module': module, 'stamp': stamp,
               'nsecs': nsecs, 'hostname': hostname, 'body': body}
    if client_id is not None:
        message['client_id'] = client_id
        message['seq'] = seq
    if caps is not None:
        message['caps'] = caps
    if secret is not None:
        message['signature'] = sign(secret, app_id, module, stamp, nsecs, body)
    return json.dumps(message).encode('utf-8')


def encode_message(app_id: str, module: str, stamp: int, nsecs: int, hostname: str, body: str,
                   secret: Union[str, bytes, None] = None, compress: bool = False,
                   client_id: Optional[str] = None, seq: Optional[int] = None, caps: Optional[str] = None) -> bytes:
    """A whole frame for one record; ACK_REQUEST is set when `client_id` is given."""
    payload = encode_payload(app_id, module, stamp, nsecs, hostname, body, secret, client_id, seq, caps)
    flags = 0
    if compress:
        payload = zlib.compress(payload)
        flags |= FLAG_ZLIB
    if client_id is not None:
        flags |= FLAG_ACK_REQUEST
    return encode_frame(payload, flags)
