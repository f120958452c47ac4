"""The quick path of version 1: a 0.7 client's unsigned records to a route that only writes classic lines.

Most version 1 traffic is exactly this, and the usual path spends most of
its time on what these records do not need: a dict per payload, checks in
Python, a route lookup and a queued line per record. Here msgspec decodes
straight to checked attributes (messages.decode_plain), a run of records
for one file takes one route lookup, and its lines are queued together.
The lines and counters are the ones the usual path makes
(tests/e2e/test_plain_frames.py).
"""

from typing import List, Optional, Sequence

from loghog.protocol import Frame
from loghogd.formats import escape_controls, may_hold_controls
from loghogd.messages import NOT_PLAIN, decode_plain
from loghogd.routes import PlainRoute, RouteCache
from loghogd.stats import Counters
from loghogd.writer import LogFile, Writer


def queue_classic(writer: Writer, logfile: LogFile, head: str, bodies: List[str], now: float) -> None:
    """Queue the classic line `head + body` of each body for one file, control characters escaped."""
    if may_hold_controls(''.join(bodies)):
        bodies = [escape_controls(body) for body in bodies]
    writer.queue_lines(logfile, head, bodies, now)


class PlainFrames:
    """Takes the leading plain frames of a pass for the processor, which handles the rest."""

    def __init__(self, routes: RouteCache, writer: Writer, counters: Counters) -> None:
        self.routes = routes
        self.writer = writer
        self.counters = counters

    def take(self, frames: Sequence[Frame], prefix: str, now: float) -> int:
        """Queue the lines of the leading frames that are plain records of a known plain route; how many.

        The first other frame ends the run (its decode is wasted, once per
        pass), and the processor's usual path takes it and the rest.
        """
        plain_routes = self.routes.plain
        taken = 0
        target: Optional[PlainRoute] = None
        app_id = module = host = None
        bodies: List[str] = []
        keep = bodies.append
        try:
            for flags, payload in frames:
                if flags:
                    break
                plain = decode_plain(payload)
                if plain.app_id != app_id or plain.module != module or plain.hostname != host:
                    found = plain_routes.get((plain.app_id, plain.module, plain.hostname))
                    if found is None:
                        break
                    if bodies:
                        taken += self._queue(target, prefix, bodies, now)
                        bodies = []
                        keep = bodies.append
                    target, app_id, module, host = found, plain.app_id, plain.module, plain.hostname
                keep(plain.body)
        except NOT_PLAIN:
            pass
        if bodies:
            taken += self._queue(target, prefix, bodies, now)
        return taken

    def _queue(self, target: PlainRoute, prefix: str, bodies: List[str], now: float) -> int:
        logfile, host_text, name = target
        queue_classic(self.writer, logfile, prefix + host_text, bodies, now)
        self.counters.accepted_by_facility[name] += len(bodies)
        return len(bodies)
