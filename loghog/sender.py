"""The sender thread of a handler: connect (with failover), spool, send, read acknowledgements.

Only this thread touches the network and the spool; the application thread
only queues records in the outbox. Records are encoded here, from what the
outbox holds, each time they are sent: as protocol 1.2 batches on a
connection whose server said it takes them, else as version 1 frames.
"""

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional, Set, Tuple

from loghog.batch import CAPS_REQUEST
from loghog.batcher import BatchEncoder, Limits, batch_limits
from loghog.encoder import RecordEncoder
from loghog.fields import Fields, from_spool, spool_bytes, version1
from loghog.outbox import MAX_TAKE, Outbox
from loghog.oversized import SAFE_FRAME_BYTES, OversizedFrames
from loghog.servers import Address, Backoff, Failover, format_address
from loghog.spool import Spool
from loghog.transport import Connection, SendError, connect_datagram, connect_stream

CONNECT_TIMEOUT = 5.0
PRIMARY_PROBE_TIMEOUT = 1.0
SEND_TIMEOUT = 10.0
MAX_BATCH_BYTES = 2 * 1024 * 1024
"""What one pass of the sender takes from the queue at most (as the queue counts records; MAX_TAKE
records bound it first for small ones). Each pass waits for the GIL a few times while the application
runs, so a pass must take all a busy application queued meanwhile, not a fixed few hundred records."""
IDLE_WAKEUP = 1.0
BUSY_RECORDS = 256
BUSY_LINGER = 0.02
"""After a pass that took at least BUSY_RECORDS records (and less than a full take), the sender waits
this long before the next: the application is logging fast, and every pass makes its thread hand the
GIL over a few times, so fewer, larger passes cost it less. A record of a quiet application goes at once."""
ACK_POLL = 0.02
SPOOL_POLL = 0.05
DROP_REPORT_SECONDS = 60.0


@dataclass
class Route:
    """How to reach the servers: fixed for a handler's life."""
    failover: Failover
    stream: bool
    tls: object
    ack_timeout: float


class Sender:
    """One handler's delivery state, driven by its sender thread (run())."""

    def __init__(self, route: Route, encoder: RecordEncoder, outbox: Outbox, spool: Optional[Spool],
                 acknowledged: bool, warn: Callable[[str], None], debug: bool,
                 batch_encoder: Optional[BatchEncoder] = None) -> None:
        self.route = route
        self.failover = route.failover
        self.encoder = encoder
        self.batch_encoder = batch_encoder
        self.outbox = outbox
        self.spool = spool
        self.acknowledged = acknowledged
        self.warn = warn
        self.debug = debug
        self.client_id = uuid.uuid4().hex  # a forked child numbers its records afresh, under its own id
        self.connection: Optional[Connection] = None
        self.closed = False
        self.deadline = 0.0
        self.interrupt = threading.Event()
        self.ever_connected = False
        self.ever_acknowledged = False
        self.oversized_total = 0
        self.last_error = ''
        self._connection_acknowledged = False
        self._ack_wait_started: Optional[float] = None
        self._caps_asked = False  # this connection's first frame asked for the server's capabilities
        self._limits: Optional[Limits] = None  # set once the server said it takes batches
        self._batch_servers: Set[Address] = set()  # servers that took batches before: wait for their answer
        self.oversized = OversizedFrames(outbox)
        self._primary: Optional[Tuple[Connection, float]] = None  # the first server, back, while we drain
        self._drops_reported_at = -DROP_REPORT_SECONDS
        self._busy = False  # the last pass took BUSY_RECORDS or more

    def run(self) -> None:
        """Send queued records until close() and the queue is empty or its deadline passes."""
        backoff = Backoff()
        failing = False
        while not self.finished():
            try:
                self._spool_new()
                if not self._wait_for_work():
                    continue
                self._spool_new()
                if self.connection is None:
                    self._open()
                elif not self._server_still_there():
                    self._debug('%s closed the connection; reconnecting' % self._where())
                    self._lost_connection()
                    continue
                elif self._switch_to_primary():
                    continue
                if self.outbox.has_unsent() and self._primary is None and not self._awaiting_caps():
                    self._send_batch()
                backoff.reset()
                failing = False
            except Exception as error:
                self._report_failure(error, failing)
                failing = True
                self._lost_connection()
                if self.failover.next():
                    self._sleep(backoff.next_delay())
        self._drop(self._primary[0] if self._primary else None)
        self._drop(self.connection)
        self.connection = self._primary = None

    def finished(self) -> bool:
        if not self.closed:
            return False
        return len(self.outbox) == 0 or time.monotonic() >= self.deadline

    def _report_failure(self, error: Exception, failing: bool) -> None:
        connected = self.connection is not None
        what = 'lost the connection to' if connected else 'could not connect to'
        self.last_error = str(error)
        if not isinstance(error, (OSError, ValueError)):
            self.warn('unexpected sender error, retrying: %r' % (error,))
        elif not failing or self.debug:
            following = 'the next server, %s' % format_address(self.failover.addresses[
                (self.failover.addresses.index(self.failover.current) + 1) % len(self.failover.addresses)]) \
                if self.failover.several else 'it'
            self.warn('%s %s (%s); retrying %s%s' % (what, self._where(), error, following,
                                             '' if self.debug else ', quietly until delivery works again'))

    def _where(self) -> str:
        return format_address(self.failover.current)

    def _open(self) -> None:
        self.connection = self._connect(self.failover.current, CONNECT_TIMEOUT)
        self.ever_connected = True
        self._new_connection()
        self._debug('connected to %s' % self._where())
        self._report_drops(force=True)

    def _new_connection(self) -> None:
        self._connection_acknowledged = False
        self._ack_wait_started = None
        self._caps_asked = False
        self._limits = None

    def _awaiting_caps(self) -> bool:
        """Whether to send nothing but the asking record until the first ACK: after a reconnect to a
        server that took batches, so that a backlog goes as batches, not as version 1 frames."""
        return (self.acknowledged and self._caps_asked and not self._connection_acknowledged
                and self.failover.current in self._batch_servers)

    def _report_drops(self, force: bool = False) -> None:
        """Once delivery works again (a connection; an ACK or a send, at most every DROP_REPORT_SECONDS
        while a slow server keeps the queue full): what the outage cost, if anything."""
        now = time.monotonic()
        if not force and now - self._drops_reported_at < DROP_REPORT_SECONDS:
            return
        dropped = self.outbox.take_dropped()
        if dropped:
            self._drops_reported_at = now
            self.warn('%d record(s) were dropped while the server could not take them (queue of %s full)'
                      % (dropped, self._queue_bound()))

    def _queue_bound(self) -> str:
        outbox = self.outbox
        bound = '%d MiB' % (outbox.max_bytes // 2**20) if outbox.max_bytes >= 2**20 else '%d bytes' % outbox.max_bytes
        return bound if outbox.max_records is None else '%s or %d records' % (bound, outbox.max_records)

    def _connect(self, address: Address, timeout: float) -> Connection:
        if self.closed:
            timeout = max(0.05, min(timeout, self.deadline - time.monotonic()))
        if not self.route.stream:
            return connect_datagram(address, self.outbox.count_dropped)
        connection = connect_stream(address, timeout, self.route.tls)
        connection.set_send_timeout(SEND_TIMEOUT)
        return connection

    def _wait_for_work(self) -> bool:
        """Wait for records to send or, with records awaiting an ACK, for the server to answer."""
        if self._busy:
            self._busy = False
            if not self.closed:
                self.interrupt.wait(BUSY_LINGER)  # close() cuts it short
        if self.acknowledged and self.connection is not None and self.outbox.last_in_flight():
            if self.oversized.holding or self._primary is not None or not self.outbox.has_unsent() \
                    or self._awaiting_caps():
                self.connection.wait_readable(ACK_POLL)
            return True
        if self.spool is not None:
            return self.outbox.wait_for_unsent(SPOOL_POLL)
        return self.outbox.wait_for_unsent(IDLE_WAKEUP)

    def _spool_new(self) -> None:
        """Write every record not yet in the spool to it (before it may be sent)."""
        if self.spool is None:
            return
        entries = self.outbox.unspooled()
        if entries:
            try:
                self.spool.append([(seq, spool_bytes(fields)) for seq, fields in entries])
            except OSError as error:
                self.warn('cannot write the spool in %s (%s); sending without it' % (self.spool.directory, error))
                self._stop_spooling()
                return
            self.outbox.spooled(entries[-1][0])

    def _stop_spooling(self) -> None:
        """Send without the spool from now on; records only it held are lost (and counted)."""
        self.outbox.lose_from_disk(self.outbox.first_unspooled())
        self.outbox.spool_backed = False
        try:
            self.spool.remove()
        except OSError:
            pass
        self.spool = None

    def _encode(self, seq: int, fields: Fields) -> bytes:
        """A version 1 frame; the first of an acknowledged connection asks for capabilities (protocol 1.2)."""
        if not self.acknowledged:
            return self.encoder.encode(*version1(fields))
        if self._caps_asked or self.batch_encoder is None:
            return self.encoder.encode(*version1(fields), self.client_id, seq)
        self._caps_asked = True
        return self.encoder.encode(*version1(fields), self.client_id, seq, CAPS_REQUEST)

    def _server_still_there(self) -> bool:
        """False when the server closed the connection; in acknowledged mode, apply its ACKs."""
        if not self.acknowledged:
            return not self.connection.peer_closed()
        try:
            acknowledged = self.connection.read_acks()
        except ConnectionError:
            return False
        if acknowledged:
            if not self._connection_acknowledged:
                self._limits = batch_limits(self.connection.caps)
                if self._limits is not None:
                    self._batch_servers.add(self.failover.current)
                self._debug('%s takes %s' % (self._where(), 'batches (protocol 1.2)' if self._limits
                                             else 'version 1 frames with acknowledgements (protocol 1.1)'))
            self._confirm(acknowledged)
            self._connection_acknowledged = self.ever_acknowledged = True
            self._ack_wait_started = None
            self._report_drops()
        else:
            self._check_acks_arrive()
        return True

    def _check_acks_arrive(self) -> None:
        """Act on a connection that carried records for ack_timeout with no ACK.

        With several servers it counts as down (the next one gets the
        records). With one, a connection that never brought back an ACK is a
        server without 1.1: fall back to version 1, counting what was sent as
        delivered, as version 1 does; a server that acknowledged once speaks
        1.1 and is only slow, so it is waited for.
        """
        in_flight = self.outbox.last_in_flight()
        if not in_flight:
            self._ack_wait_started = None
            return
        now = time.monotonic()
        if self._ack_wait_started is None:
            self._ack_wait_started = now
            return
        if now - self._ack_wait_started <= self.route.ack_timeout:
            return
        if self.failover.several:
            raise ConnectionError('no acknowledgement for %g s' % self.route.ack_timeout)
        if not self._connection_acknowledged:
            self.acknowledged = False
            self._confirm(in_flight)
            if self.spool is not None:  # spooled frames ask for ACKs: useless to this server
                self._stop_spooling()
            self.warn('%s sent no acknowledgement for %g s; sending without acknowledgements (as loghog 0.7)'
                      ' from now on' % (self._where(), self.route.ack_timeout))

    def _switch_to_primary(self) -> bool:
        """On another server: once the first is back, drain what is in flight, then move to it."""
        if self._primary is None:
            if not self.failover.primary_due():
                return False
            try:
                connection = self._connect(self.failover.addresses[0], PRIMARY_PROBE_TIMEOUT)
            except OSError:
                self.failover.tried_primary()
                return False
            self._primary = (connection, time.monotonic())
        connection, since = self._primary
        if self.outbox.last_in_flight() and time.monotonic() - since < self.route.ack_timeout:
            return False  # the records in flight here are acknowledged here, so they are not sent twice
        self._drop(self.connection)
        self.outbox.rewind()
        self.connection, self._primary = connection, None
        self.failover.back_to_primary()
        self._new_connection()
        self._debug('back on %s' % self._where())
        return True

    def _send_batch(self) -> None:
        below = None
        if self.spool is not None:
            below = self.outbox.first_unspooled()
            self.outbox.lose_from_disk(self.spool.lost_upto)
        batch = self.outbox.take_unsent(MAX_BATCH_BYTES, below)
        if not batch:
            return
        self._busy = BUSY_RECORDS <= len(batch) < MAX_TAKE
        acknowledged = self.acknowledged  # then only an ACK confirms a record
        if batch[0][1] is None:  # beyond the memory bound: only the spool has them
            on_disk = self.spool.read(batch[0][0], batch[-1][0])
            read_back = ((seq, from_spool(on_disk[seq])) for seq, _, _ in batch if seq in on_disk)
            batch = [(seq, fields, 0) for seq, fields in read_back if fields is not None]
            if not batch:
                return
        if acknowledged and self._limits is not None:
            frames = self.batch_encoder.frames(self.client_id, batch, self._limits)
        else:
            frames = [(seq, self._encode(seq, fields)) for seq, fields, _ in batch]
        if acknowledged and self._limits is None:
            frames = self.oversized.hold_back(frames)
            if not frames:
                return
        try:
            last_sent = self.connection.send(frames)
        except SendError as error:
            if error.last_sent and not acknowledged:
                self._confirm(error.last_sent)
            raise
        if not acknowledged:
            self._confirm(last_sent)
            self._report_drops()

    def _lost_connection(self) -> None:
        """Drop the connection; what it did not confirm is sent again, except a frame the server refuses."""
        refused = self.oversized.refused(self.connection is not None)
        if refused:
            self._confirm(refused)
            self.outbox.count_dropped()
            self.oversized_total += 1
            self.warn('dropped a record of more than %d bytes: %s closed the connection each time it was sent'
                      ' (over its max_message_size)' % (SAFE_FRAME_BYTES - 8, self._where()))
        self._drop(self.connection)
        self.connection = None
        if self._primary is not None:
            self._drop(self._primary[0])
            self._primary = None
        self.outbox.rewind()

    def _confirm(self, last_seq: int) -> None:
        self.outbox.confirm(last_seq)
        if self.spool is not None:
            self.spool.confirm(last_seq)

    def _sleep(self, delay: float) -> None:
        """Back off, but no later than close()'s deadline (close() cuts it short); records keep being spooled."""
        if self.closed:
            delay = min(delay, max(0.0, self.deadline - time.monotonic()))
        end = time.monotonic() + delay
        while True:
            self._spool_new()
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.interrupt.wait(min(left, SPOOL_POLL) if self.spool is not None else left):
                self.interrupt.clear()
                return

    def _drop(self, connection: Optional[Connection]) -> None:
        if connection is not None:
            try:
                connection.close()
            except OSError:
                pass

    def _debug(self, message: str) -> None:
        if self.debug:
            self.warn(message)
