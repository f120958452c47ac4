"""Syslog over a stream (TCP, TLS) split into messages, RFC 6587; no I/O.

Each message picks its own framing, as rsyslog's imtcp does: one that
starts with a digit is octet-counted (`LEN SP MSG`), any other ends at LF.
A message longer than the limit is cut to it and flagged, and the rest of
it is skipped as it arrives, so the peer stays connected and at most
`max_size` bytes plus a length header are ever held.
"""

import re
from typing import List, Tuple

MAX_LENGTH_DIGITS = 10
"""An octet count has at most this many digits (max_message_size is at most 1 GiB)."""

Message = Tuple[bytes, bool]
"""A message's bytes and whether they were cut to the limit."""

_DIGITS = re.compile(rb'[0-9]{1,%d}' % (MAX_LENGTH_DIGITS + 1))
_OCTET_COUNT = re.compile(rb'[0-9]{1,%d} ' % MAX_LENGTH_DIGITS).match
_EMPTY = (b'', b'\r')


class SyslogFramer:
    """Turns a byte stream, split or joined any way, into whole syslog messages.

    Cost stays linear in the bytes fed: a partial message waits in one
    buffer that is only appended to until it can be complete (its octet
    count reached, or an LF or the limit arrived), and the search for an LF
    never looks at the same byte twice.
    """

    __slots__ = ('max_size', '_pending', '_need', '_scanned', '_skip_bytes', '_skip_line')

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._pending = bytearray()
        self._need = 0
        self._scanned = -1
        self._skip_bytes = 0
        self._skip_line = False

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._pending)

    def feed(self, data: bytes) -> List[Message]:
        """Every message that `data` completes, in order; maybe none."""
        pending = self._pending
        if pending:
            pending += data
            if self._need and len(pending) < self._need:
                return []
            if self._scanned >= 0 and b'\n' not in data and len(pending) <= self.max_size:
                self._scanned = len(pending)
                return []
            data = bytes(pending)
            self._pending = bytearray()
        messages: List[Message] = []
        position = self._split(data, messages)
        if position < len(data):
            self._pending += memoryview(data)[position:]
        return messages

    def finish(self) -> Tuple[List[Message], int]:
        """At the end of the stream: a last message without LF, and the bytes of an octet-counted one cut off."""
        pending, self._pending = bytes(self._pending), bytearray()
        if self._need:
            return [], len(pending)
        if pending in _EMPTY:
            return [], 0
        return [(pending, False)], 0

    def _split(self, buffer: bytes, messages: List[Message]) -> int:
        """Append the messages in `buffer` and return where its unfinished part starts."""
        max_size = self.max_size
        end = len(buffer)
        scanned = self._scanned
        self._need = 0
        self._scanned = -1
        position = self._skip(buffer, 0)
        append = messages.append
        while position < end:
            counted = _OCTET_COUNT(buffer, position)
            if counted is not None:
                start = counted.end()
                length = int(buffer[position:start - 1])
                keep = length if length <= max_size else max_size
                if end - start < keep:
                    self._need = start + keep - position
                    return position
                position = start + keep
                append((buffer[start:position], length > keep))
                if length > keep:
                    self._skip_bytes = length - keep
                    position = self._skip(buffer, position)
                continue
            if 0x30 <= buffer[position] <= 0x39:
                stop = _DIGITS.match(buffer, position).end()
                if stop == end and stop - position <= MAX_LENGTH_DIGITS:
                    return position
            newline = buffer.find(b'\n', position + max(scanned, 0))
            scanned = -1
            if newline < 0 or newline - position > max_size:
                if end - position <= max_size:
                    self._scanned = end - position
                    return position
                append((buffer[position:position + max_size], True))
                self._skip_line = newline < 0
                position = end if newline < 0 else newline + 1
                continue
            message = buffer[position:newline]
            if message not in _EMPTY:
                append((message, False))
            position = newline + 1
        return position

    def _skip(self, buffer: bytes, position: int) -> int:
        """Where `buffer` goes on after what is left of a message cut to the limit."""
        if self._skip_bytes:
            step = min(self._skip_bytes, len(buffer) - position)
            self._skip_bytes -= step
            return position + step
        if self._skip_line:
            newline = buffer.find(b'\n', position)
            if newline < 0:
                return len(buffer)
            self._skip_line = False
            return newline + 1
        return position
