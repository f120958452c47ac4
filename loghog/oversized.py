"""Frames a server may refuse for their size: sent alone, and dropped after OVERSIZED_STRIKES refusals.

A loghogd closes the connection on a frame over its max_message_size and
says nothing else. Sent alone, once everything before it is acknowledged,
such a frame is recognised by that close, and dropped after
OVERSIZED_STRIKES tries instead of being resent forever. The sender
(sender.py) and the delivery of a dead process's spool (replay.py) share
these limits.
"""

from typing import Dict, List, Tuple

from loghog.outbox import Outbox

SAFE_FRAME_BYTES = 8 + 8192  # every loghogd accepts a payload this big (its smallest max_message_size)
OVERSIZED_STRIKES = 2


class OversizedFrames:
    """The sender's frames over SAFE_FRAME_BYTES: the one held back or in flight alone, and its strikes."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.holding = False
        self._in_flight = 0
        self._strikes: Dict[int, int] = {}

    def hold_back(self, frames: List[Tuple[int, bytes]]) -> List[Tuple[int, bytes]]:
        """The frames to send now: those before a big one, else the big one alone once nothing precedes it."""
        self.holding = False
        for index, (seq, frame) in enumerate(frames):
            if len(frame) > SAFE_FRAME_BYTES:
                break
        else:
            return frames
        if index:
            self.outbox.take_back(seq)
            return frames[:index]
        if self.outbox.oldest_seq() < seq:
            self.outbox.take_back(seq)
            self.holding = True
            return []
        self.outbox.take_back(seq + 1)
        self._in_flight = seq
        return frames[:1]

    def refused(self, connected: bool) -> int:
        """The connection was lost: the seq of a big frame it carried alone, refused for the last time, else 0."""
        big = self._in_flight
        self._in_flight = 0
        self.holding = False
        if big and self.outbox.oldest_seq() == big and connected:
            strikes = self._strikes.pop(big, 0) + 1
            if strikes >= OVERSIZED_STRIKES:
                return big
            self._strikes[big] = strikes
        return 0
