"""One loop pass: what the pass received goes to the files, the journal and the acknowledgements.

A pass, in this order:

1. receive: the server reads its sockets and hands frames (and syslog
   records) to the processor (loghogd/server.py);
2. route: the processor checks each one and queues its line on the writer
   (loghogd/processor.py);
3. write, wrapped in the journal when acknowledged records are among the
   lines: the intent (each file's size before and after, and the sequence
   numbers) goes to the journal first, then the writer writes, then the
   commit mark (loghogd/acks.py). Staging the intent can rotate a file the
   write would take past max_size (the writer's `on_full`, the rotator);
4. acknowledge: the pass answers which connections are owed an ACK and
   which clients must resend, and the server sends and closes (sockets
   stay with the server);
5. rotate: between passes, the rotator rotates what is due
   (loghogd/rotation.py).

This module is the only caller of the writer's flush: the server after
every pass and while draining, the service at reload and at stop, and the
tests, so every line that reaches a file is inside an intent/commit pair.
"""

from typing import Dict, NamedTuple, Optional, Set

from loghogd.acks import AckJournal
from loghogd.facilities import Facilities
from loghogd.processor import Processor
from loghogd.writer import Writer


class PassResult(NamedTuple):
    """What the server must do on its sockets once a pass is written."""
    owed: Dict[object, str]
    """Connection -> client id: each is owed an ACK for that client's records."""
    resend: Set[str]
    """Client ids whose acknowledged records the full memory buffer dropped: their connections close so they resend."""
    held: Set[object]
    """Connections whose acknowledged records went over a rate limit: they close so that their clients resend."""


class LoopPass:
    """Writes, journals and decides the acknowledgements of each loop pass; never touches a socket."""

    def __init__(self, processor: Processor, writer: Writer) -> None:
        self.processor = processor
        self.writer = writer

    @property
    def acks(self) -> Optional[AckJournal]:
        return self.processor.acks

    def use_journal(self, journal: AckJournal) -> None:
        """Acknowledged delivery from now on: the processor checks against `journal`, each pass writes it."""
        self.processor.acks = journal

    def finish(self, now: float, force: bool = False) -> PassResult:
        """Write the pass's lines (all of them with `force`), inside the journal when records are acknowledged."""
        acks = self.processor.acks
        dropped: Set[str] = set()
        if acks is not None and acks.pending:
            acks.write_intent()
            self.writer.flush(now, force)
            dropped = set(acks.commit())
        else:
            self.writer.flush(now, force)
        return PassResult(self.processor.take_ack_targets(), dropped, self.processor.take_held_for_resend())

    def reload(self, facilities: Facilities, now: float) -> PassResult:
        """SIGHUP: what is queued is written under the facilities it came for, then the new ones apply."""
        result = self.finish(now, force=True)
        self.processor.set_facilities(facilities)
        return result

    def close(self, now: float) -> None:
        """At stop, after the server drained its clients: a last journaled write, then every file closes."""
        self.finish(now, force=True)
        self.writer.close_files()
        if self.processor.acks is not None:
            self.processor.acks.close()
