"""The selectors loop: sockets in, frames to the processor, acknowledgements out.

Socket I/O only: what a pass received is written, journaled and turned
into ACK decisions by loghogd/pipeline.py. One thread, one loop. Each readiness event gets a bounded amount of work
(one read per connection, a batch of datagrams, a batch of accepts) so that
no peer can starve another. TLS handshakes run non-blocking with a deadline
(tls_handshake_timeout). What each peer may hold is in limits.py; sockets
are opened in listeners.py; UDP datagrams are read in datagram_input.py.
The server never sends a byte to a version-1 client.
"""

import logging
import selectors
import socket
import ssl
import time
from typing import Callable, Dict, List, Optional, Sequence, Set

from loghog.batch import BATCH_CLIENT_FLAGS
from loghog.protocol import Frame, FrameError, StreamDecoder
from loghogd.acksender import AckSender
from loghogd.config import ServerConfig
from loghogd.datagram_input import DatagramInput
from loghogd.handshakes import HandshakeFailed, Handshakes
from loghogd.limits import Connection, ConnectionLimits
from loghogd.listeners import (OUT_OF_DESCRIPTORS, Listener, Listeners, format_peer, peer_host, prepare_accepted,
                               raise_descriptor_limit)
from loghogd.pipeline import LoopPass, PassResult
from loghogd.processor import ReceiveClock
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.syslog_input import SyslogInput
from loghogd.syslog_server import peer_address
from loghogd.wakeup import NEVER, seconds_until

log = logging.getLogger('loghogd')

READ_SIZE = 256 * 1024
ACCEPT_BATCH = 64
ACCEPT_PAUSE = 0.5
ACK_RETRY = 0.05
DRAIN_SECONDS = 5.0


class Server:
    """Owns every socket and runs the loop until asked to stop."""

    def __init__(self, config: ServerConfig, loop_pass: LoopPass, counters: Counters,
                 reporter: RateLimitedReporter, tls_context: Optional[ssl.SSLContext] = None) -> None:
        self.config = config
        self.loop_pass = loop_pass
        self.processor = processor = loop_pass.processor
        self.counters = counters
        self.reporter = reporter
        self.tls_context = tls_context
        self.selector = selectors.DefaultSelector()
        self.listeners = Listeners(self.selector)
        self.connections: Dict[int, Connection] = {}
        self.handshakes = Handshakes(config.tls_handshake_timeout, counters, reporter)
        self.limits = ConnectionLimits(config, counters, reporter)
        self.clock = ReceiveClock()
        self.now = time.time()
        self.mono = time.monotonic()
        self.prefix = self.clock.prefix(self.now)
        self.stopping = False
        self.ack_sender = AckSender(counters, processor.batches.capabilities())
        self.syslog = SyslogInput(processor, counters, reporter, config.max_message_size)
        self.datagrams = DatagramInput(config.max_message_size, self.limits, processor, self.syslog, counters, reporter)
        self.syslog_tls_context: Optional[ssl.SSLContext] = None

    # start-up -----------------------------------------------------------

    def fit_descriptor_limit(self) -> None:
        """Before bind: raise the open-file limit as far as allowed, and serve only as many connections as it fits."""
        config = self.config
        self.limits.fit(raise_descriptor_limit(config.max_connections),
                        bool(config.listen_ssl or config.listen_syslog_tls))

    def bind(self) -> List[Dict[str, object]]:
        """Open every listener; return what is bound (ports resolved)."""
        return self.listeners.open(self.config, self._accept, self._read_datagrams)

    def add_wakeup(self, sock: socket.socket) -> None:
        """A socket that signal handlers write to, so select returns at once."""
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, (self._drain_wakeup, sock))

    @staticmethod
    def _drain_wakeup(sock: socket.socket) -> None:
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # the loop -----------------------------------------------------------

    def run(self, between_passes: Callable[[float], float]) -> None:
        """Serve until `stopping`; `between_passes(now)` returns the next timeout."""
        select = self.selector.select
        timeout = between_passes(time.time())
        while not self.stopping:
            events = select(timeout)
            now = self._begin_pass()
            for key, _mask in events:
                handler, target = key.data
                handler(target)
            self._enforce_deadlines(self.mono)
            self.end_pass(now)
            timeout = seconds_until((between_passes(now), self._next_deadline(self.mono),
                                     ACK_RETRY if self.ack_sender.owed else NEVER))

    def _begin_pass(self) -> float:
        """The pass's clocks and line prefix, read once for everything it receives."""
        now = self.now = time.time()
        self.mono = time.monotonic()
        self.prefix = self.clock.prefix(now)
        return now

    def end_pass(self, now: float, force: bool = False) -> None:
        """The pass's lines written and journaled (loghogd/pipeline.py), then its acknowledgements sent."""
        self.answer(self.loop_pass.finish(now, force))

    def answer(self, result: PassResult) -> None:
        """Owe the ACKs a pass decided, close the connections that must resend, send what is owed."""
        if result.owed:
            self.ack_sender.owe(result.owed, self.processor.caps_asked)
            self.processor.caps_asked.clear()
        if result.resend:
            self._disconnect_to_resend(result.resend)
        for connection in result.held:
            self._close(connection)
        if self.ack_sender.owed:
            self.ack_sender.send(self.loop_pass.acks)

    def _disconnect_to_resend(self, client_ids: Set[str]) -> None:
        """Acknowledged records were dropped from the full memory buffer: a client resends after a reconnect."""
        for connection in list(self.connections.values()):
            if connection.ack_client in client_ids:
                self.reporter.report('resend', logging.ERROR, 'records of client %s were dropped unwritten; closing '
                                     'its connection from %s so that it resends them', connection.ack_client,
                                     connection.peer)
                self._close(connection)

    def next_wakeup(self, now: float) -> float:
        """Seconds until the server itself has timed work to do (NEVER when none)."""
        return self.listeners.next_wakeup(now)

    def timed_work(self, now: float) -> None:
        """Between passes: accepting resumes when its pause for descriptors is over."""
        self.listeners.resume_accepting_if_due(now, self._accept)

    # accepting ----------------------------------------------------------

    def _accept(self, listener: Listener) -> None:
        tls = listener.transport == 'tls'
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in OUT_OF_DESCRIPTORS:
                    self._pause_accepting(error)
                else:
                    self.reporter.report('accept', logging.WARNING, 'accept failed on %s: %s',
                                         listener.transport.upper(), error)
                return
            peer, host = format_peer(address), peer_host(address)
            refusal = self.limits.refusal(host, tls)
            if refusal == 'max_connections' and tls and self.handshakes.pending:
                self._close(self.handshakes.oldest_to_evict())
                refusal = self.limits.refusal(host, tls)
            if refusal is not None:
                sock.close()
                self.limits.refuse(peer, refusal)
                continue
            self._add_connection(sock, peer, host, tls, listener.syslog, peer_address(address))

    def _pause_accepting(self, error: OSError) -> None:
        self.counters.connections_refused += 1
        self.reporter.report('descriptors', logging.ERROR,
                             'cannot accept connections: %s; pausing accepts for %.1f s',
                             error.strerror or error, ACCEPT_PAUSE)
        self.listeners.pause_accepting(time.time() + ACCEPT_PAUSE)

    def _add_connection(self, sock: socket.socket, peer: str, host: str, tls: bool, syslog: bool = False,
                        sender: str = '') -> None:
        prepare_accepted(sock)
        decoder = self.syslog.new_framer() if syslog else StreamDecoder(self.config.max_message_size, BATCH_CLIENT_FLAGS)
        if tls:
            context = self.syslog_tls_context if syslog else self.tls_context
            try:
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                                           suppress_ragged_eofs=True)
            except (OSError, ssl.SSLError) as error:
                sock.close()
                self.handshakes.failed(peer, str(error))
                return
        connection = Connection(sock, peer, host, decoder, tls, time.monotonic())
        if syslog:
            connection.syslog_kind, connection.sender = ('tls' if tls else 'tcp'), sender
        self.connections[sock.fileno()] = connection
        self.limits.opened(connection)
        self.counters.connections_accepted += 1
        if tls:
            self.handshakes.start(connection)
            self.selector.register(sock, selectors.EVENT_READ, (self._handshake, connection))
            self._handshake(connection)
        else:
            self.selector.register(sock, selectors.EVENT_READ, (self._read_stream, connection))

    # TLS handshakes -----------------------------------------------------

    def _handshake(self, connection: Connection) -> None:
        try:
            waiting_for = self.handshakes.step(connection)
        except HandshakeFailed:
            self._close(connection)
            return
        if waiting_for:
            self.selector.modify(connection.sock, waiting_for, (self._handshake, connection))
            return
        self.selector.modify(connection.sock, selectors.EVENT_READ, (self._read_stream, connection))
        self._read_stream(connection)

    # deadlines ----------------------------------------------------------

    def _enforce_deadlines(self, now: float) -> None:
        for connection in self.handshakes.late(now) + self.limits.expired(now):
            self._close(connection)
        resumable = [connection for connection, at in self.limits.paused.items() if at <= now]
        for connection in resumable:
            self._deliver(connection, ())
            for victim in self.limits.account(connection, now, False):
                self._close(victim)

    def _next_deadline(self, now: float) -> float:
        return min(self.limits.next_deadline(now), self.handshakes.next_deadline(now))

    # reading ------------------------------------------------------------

    def _read_stream(self, connection: Connection) -> None:
        """One read (plus what TLS already decrypted) per readiness event."""
        sock = connection.sock
        try:
            data = sock.recv(READ_SIZE)
            if connection.tls and data:
                pending = sock.pending()
                while pending:
                    data += sock.recv(pending)
                    pending = sock.pending()
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (ssl.SSLError, OSError) as error:
            self.reporter.report('read', logging.INFO, 'connection from %s failed: %s', connection.peer, error)
            self._finish(connection)
            return
        if not data:
            self._finish(connection)
            return
        self._consume(connection, data)

    def _consume(self, connection: Connection, data: bytes) -> None:
        if connection.syslog_kind:
            completed = self.syslog.stream_data(connection.decoder, data, connection.syslog_kind, connection.peer,
                                                connection.sender, self.now, self.prefix)
            for victim in self.limits.account(connection, self.mono, bool(completed)):
                self._close(victim)
            return
        counters = self.counters
        counters.bytes_received += len(data)
        decoder = connection.decoder
        frames = decoder.feed(data)
        if frames:
            counters.frames_received += len(frames)
            self._deliver(connection, frames)
        if decoder.error is not None:
            self._frame_error(connection.peer, decoder.error)
            self._close(connection)
            return
        for victim in self.limits.account(connection, self.mono, bool(frames)):
            self._close(victim)

    def _deliver(self, connection: Connection, frames: Sequence[Frame]) -> None:
        """Frames to the processor, compressed ones within the peer's inflate budget.

        Frames over the budget wait on the connection, which is not read
        until the budget allows them (a compressed flood slows its sender).
        """
        paused = self.limits.paused
        was_paused = connection in paused
        if connection.held:
            frames = connection.held + list(frames)
        ready, waiting = self.limits.inflate(connection.host, connection.peer, frames, self.mono)
        connection.held = waiting
        connection.held_bytes = sum(len(payload) for _flags, payload in waiting)
        if ready:
            self.processor.process(ready, connection.peer, self.now, self.prefix, connection)
        if waiting:
            if not was_paused:
                self.selector.unregister(connection.sock)
            paused[connection] = self.limits.resume_at(connection.host, self.mono)
        elif was_paused:
            del paused[connection]
            self.selector.register(connection.sock, selectors.EVENT_READ, (self._read_stream, connection))

    def _frame_error(self, peer: str, error: FrameError) -> None:
        self.counters.reject(error.reason)
        self.reporter.report('frame:' + error.reason, logging.WARNING,
                             'closing the connection from %s: %s', peer, error)

    def _finish(self, connection: Connection) -> None:
        """The peer closed, or the server stops: what is left (a partial frame, frames over budget) is counted."""
        for _frame in connection.held:
            self.counters.reject('inflate_rate')
        if connection.held:
            self.reporter.report('inflate', logging.WARNING, 'dropped %d compressed frames from %s at stop: they were '
                                 'over its inflate budget', len(connection.held), connection.peer)
        if connection.syslog_kind:
            self.syslog.stream_end(connection.decoder, connection.syslog_kind, connection.peer, connection.sender,
                                   self.now, self.prefix)
        elif connection.decoder.pending_bytes and connection.decoder.error is None:
            self.counters.reject('truncated')
            self.reporter.report('truncated', logging.WARNING,
                                 'connection from %s closed in the middle of a frame (%d bytes dropped)',
                                 connection.peer, connection.decoder.pending_bytes)
        self._close(connection)

    def _close(self, connection: Connection) -> None:
        sock = connection.sock
        fd = sock.fileno()
        if fd >= 0:
            if connection not in self.limits.paused:
                self.selector.unregister(sock)
            self.connections.pop(fd, None)
            self.handshakes.pending.pop(connection, None)
            self.limits.closed(connection)
        self.ack_sender.forget(connection)
        self.processor.forget_connection(connection)
        sock.close()

    def _read_datagrams(self, listener: Listener) -> None:
        self.datagrams.read(listener, self.now, self.prefix, self.mono)

    # stopping -----------------------------------------------------------

    def drain(self) -> None:
        """At stop: read what the clients have already sent, then close them.

        Listeners close first; every connection is read in turn, round after
        round, until a round brings nothing new from it (bounded in time), so
        one client that never stops sending cannot starve the others.
        """
        deadline = time.time() + DRAIN_SECONDS
        for listener in self.listeners.datagram_listeners():
            self.datagrams.drain(listener, deadline, self.now, self.prefix, self.mono)
        self.listeners.close()
        reading = []
        for connection in list(self.connections.values()):
            if connection in self.handshakes.pending:
                self._close(connection)
            else:
                reading.append(connection)
        while reading and time.time() < deadline:
            still_sending = []
            for connection in reading:
                before = connection.decoder.pending_bytes, self.counters.bytes_received
                self._begin_pass()
                if connection in self.limits.paused:
                    self._deliver(connection, ())
                else:
                    self._read_stream(connection)
                if connection.sock.fileno() < 0:
                    continue
                if connection.held or before == (connection.decoder.pending_bytes, self.counters.bytes_received):
                    self.end_pass(self.now, force=True)
                    self._finish(connection)
                else:
                    still_sending.append(connection)
            reading = still_sending
        for connection in reading:
            self.end_pass(time.time(), force=True)
            self._finish(connection)
        self.end_pass(time.time(), force=True)
