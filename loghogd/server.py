"""Listeners and the selectors loop: sockets in, frames to the processor.

One thread, one loop. Each readiness event gets a bounded amount of work
(one read per connection, a batch of datagrams, a batch of accepts) so that
no peer can starve another. TLS handshakes run non-blocking with a short
deadline, because the deployed client falls back to plaintext after 1 s.
The server never sends a byte to a version-1 client.
"""

import errno
import logging
import resource
import selectors
import socket
import ssl
import time
from typing import Callable, Dict, List, Optional

from loghog.protocol import FrameError, StreamDecoder, decode_datagram, encode_ack
from loghogd.config import ListenAddress, ServerConfig
from loghogd.processor import Processor, ReceiveClock
from loghogd.stats import Counters, RateLimitedReporter
from loghogd.writer import MAX_OPEN_FILES

log = logging.getLogger('loghogd')

READ_SIZE = 256 * 1024
UDP_DATAGRAM_MAX = 65536
UDP_BATCH = 128
ACCEPT_BATCH = 64
LISTEN_BACKLOG = 1024
HANDSHAKE_TIMEOUT = 0.5
ACCEPT_PAUSE = 0.5
ACK_RETRY = 0.05
DRAIN_SECONDS = 5.0
RESERVED_DESCRIPTORS = MAX_OPEN_FILES + 64
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ServerError(Exception):
    """The server cannot start (address in use, unreadable certificate, ...)."""


def connection_limit(configured: int) -> int:
    """max_connections, fitted to the descriptor limit after raising that as far as allowed.

    Client connections must never take the descriptors that log files and
    the daemon's own files need (RESERVED_DESCRIPTORS), or the records of
    connected clients could no longer be written.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = configured + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return configured
    limit = max(1, soft - min(RESERVED_DESCRIPTORS, soft // 2))
    log.warning('the open file limit is %d: serving at most %d connections, not max_connections = %d '
                '(raise ulimit -n or LimitNOFILE to %d)', soft, limit, configured, wanted)
    return limit


def make_tls_context(config: ServerConfig) -> ssl.SSLContext:
    """Mutual TLS: the client must present a certificate signed by `cacert`.

    Session tickets are off because the deployed 0.7 client stalls on them.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.num_tickets = 0
    try:
        context.load_cert_chain(config.pemfile)
    except (OSError, ssl.SSLError) as error:
        raise ServerError('cannot load the server certificate and key from %s: %s'
                          % (config.pemfile, error)) from None
    for name, path in (('cacert', config.cacert), ('crlfile', config.crlfile)):
        if path is None:
            continue
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as error:
            raise ServerError('cannot load %s %s: %s' % (name, path, error)) from None
    if config.crlfile is not None:
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def format_peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return ('[%s]:%d' if ':' in host else '%s:%d') % (host, port)
    return str(address)


class Connection:
    """One client stream and its partial frame."""

    __slots__ = ('sock', 'peer', 'decoder', 'tls', 'handshake_deadline', 'ack_client', 'ack_sent', 'ack_out')

    def __init__(self, sock: socket.socket, peer: str, decoder: StreamDecoder, tls: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.decoder = decoder
        self.tls = tls
        self.handshake_deadline = 0.0
        self.ack_client = ''
        self.ack_sent = 0
        self.ack_out = b''


class Listener:
    __slots__ = ('sock', 'transport', 'address')

    def __init__(self, sock: socket.socket, transport: str, address: ListenAddress) -> None:
        self.sock = sock
        self.transport = transport
        self.address = address


class Server:
    """Owns every socket and runs the loop until asked to stop."""

    def __init__(self, config: ServerConfig, processor: Processor, counters: Counters,
                 reporter: RateLimitedReporter, tls_context: Optional[ssl.SSLContext] = None) -> None:
        self.config = config
        self.processor = processor
        self.counters = counters
        self.reporter = reporter
        self.tls_context = tls_context
        self.selector = selectors.DefaultSelector()
        self.listeners: List[Listener] = []
        self.connections: Dict[int, Connection] = {}
        self.handshakes: Dict[int, Connection] = {}
        self.clock = ReceiveClock()
        self.now = time.time()
        self.prefix = self.clock.prefix(self.now)
        self.stopping = False
        self._accept_paused_until = 0.0
        self._acks_owed: Dict[Connection, None] = {}
        self.max_connections = config.max_connections

    # start-up -----------------------------------------------------------

    def bind(self) -> List[Dict[str, object]]:
        """Open every listener; return what is bound (ports resolved)."""
        self.max_connections = connection_limit(self.config.max_connections)
        bound = []
        for address in self.config.listen:
            bound.append(self._listen(address, socket.SOCK_STREAM, 'tcp'))
            bound.append(self._listen(address, socket.SOCK_DGRAM, 'udp'))
        for address in self.config.listen_ssl:
            bound.append(self._listen(address, socket.SOCK_STREAM, 'tls'))
        return bound

    def _listen(self, address: ListenAddress, kind: int, transport: str) -> Dict[str, object]:
        family = socket.AF_INET6 if ':' in address.host else socket.AF_INET
        sock = socket.socket(family, kind)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                self._size_receive_buffer(sock)
            sock.bind((address.host, address.port))
            if kind == socket.SOCK_STREAM:
                sock.listen(LISTEN_BACKLOG)
        except OSError as error:
            sock.close()
            raise ServerError('cannot listen on %s %s: %s' % (
                transport.upper(), format_peer((address.host, address.port)), error.strerror or error)) from None
        sock.setblocking(False)
        listener = Listener(sock, transport, address)
        self.listeners.append(listener)
        handler = self._read_datagrams if transport == 'udp' else self._accept
        self.selector.register(sock, selectors.EVENT_READ, (handler, listener))
        port = sock.getsockname()[1]
        log.info('listening on %s %s', transport.upper(), format_peer((address.host, port)))
        return {'transport': transport, 'host': address.host, 'port': port}

    def _size_receive_buffer(self, sock: socket.socket) -> None:
        """Bursts of datagrams wait in the kernel; root may exceed rmem_max."""
        size = self.config.udp_receive_buffer
        if not size:
            return
        force = getattr(socket, 'SO_RCVBUFFORCE', None)
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

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
            now = self.now = time.time()
            self.prefix = self.clock.prefix(now)
            for key, _mask in events:
                handler, target = key.data
                handler(target)
            self.end_pass(now)
            if self.handshakes:
                self._expire_handshakes(now)
            timeout = between_passes(now)
            if self.handshakes:
                timeout = min(timeout, HANDSHAKE_TIMEOUT)
            if self._acks_owed:
                timeout = min(timeout, ACK_RETRY)

    def end_pass(self, now: float, force: bool = False) -> None:
        """Write the pass's lines; with acknowledged records, journal them around the write, then ack."""
        processor = self.processor
        acks = processor.acks
        dropped = None
        if acks is not None and acks.pending:
            acks.write_intent()
            processor.writer.flush(now, force)
            dropped = acks.commit()
        else:
            processor.writer.flush(now, force)
        if processor.ack_targets:
            for connection, client_id in processor.ack_targets.items():
                connection.ack_client = client_id
                self._acks_owed[connection] = None
            processor.ack_targets.clear()
        if dropped:
            self._disconnect_to_resend(set(dropped))
        if self._acks_owed:
            self._send_acks()

    def _disconnect_to_resend(self, client_ids: set) -> None:
        """Acknowledged records were dropped from the full memory buffer: a client resends after a reconnect."""
        for connection in list(self.connections.values()):
            if connection.ack_client in client_ids:
                self.reporter.report('resend', logging.ERROR, 'records of client %s were dropped unwritten; closing '
                                     'its connection from %s so that it resends them', connection.ack_client,
                                     connection.peer)
                self._close(connection)

    def _send_acks(self) -> None:
        """At most one ACK frame per connection per pass; a client not reading gets it later."""
        acks = self.processor.acks
        highest = acks.highest
        for connection in list(self._acks_owed):
            if not connection.ack_out:
                seq = highest(connection.ack_client)
                if seq <= connection.ack_sent:
                    if not acks.waiting_for_disk(connection.ack_client):
                        del self._acks_owed[connection]
                    continue
                connection.ack_out = encode_ack(seq)
                connection.ack_sent = seq
            try:
                sent = connection.sock.send(connection.ack_out)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                continue
            except OSError:
                del self._acks_owed[connection]
                continue
            connection.ack_out = connection.ack_out[sent:]
            if not connection.ack_out:
                self.counters.acks_sent += 1
                if highest(connection.ack_client) <= connection.ack_sent:
                    del self._acks_owed[connection]

    def next_wakeup(self, now: float) -> float:
        """Seconds until the server itself has timed work to do."""
        if self._accept_paused_until:
            return max(0.0, self._accept_paused_until - now)
        return 3600.0

    def timed_work(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            for listener in self.listeners:
                if listener.transport != 'udp':
                    self.selector.register(listener.sock, selectors.EVENT_READ, (self._accept, listener))

    # accepting ----------------------------------------------------------

    def _accept(self, listener: Listener) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in _OUT_OF_DESCRIPTORS:
                    self._pause_accepting(error)
                else:
                    self.reporter.report('accept', logging.WARNING, 'accept failed on %s: %s',
                                         listener.transport.upper(), error)
                return
            peer = format_peer(address)
            if len(self.connections) >= self.max_connections:
                sock.close()
                self.counters.connections_refused += 1
                self.reporter.report('refused', logging.WARNING,
                                     'refused a connection from %s: %d connections are open (max_connections)',
                                     peer, len(self.connections))
                continue
            self._add_connection(sock, peer, listener.transport == 'tls')

    def _pause_accepting(self, error: OSError) -> None:
        self.counters.connections_refused += 1
        self.reporter.report('descriptors', logging.ERROR,
                             'cannot accept connections: %s; pausing accepts for %.1f s',
                             error.strerror or error, ACCEPT_PAUSE)
        if not self._accept_paused_until:
            for listener in self.listeners:
                if listener.transport != 'udp':
                    self.selector.unregister(listener.sock)
        self._accept_paused_until = time.time() + ACCEPT_PAUSE

    def _add_connection(self, sock: socket.socket, peer: str, tls: bool) -> None:
        sock.setblocking(False)
        decoder = StreamDecoder(self.config.max_message_size)
        if tls:
            context = self.tls_context
            try:
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                                           suppress_ragged_eofs=True)
            except (OSError, ssl.SSLError) as error:
                sock.close()
                self._tls_failed(peer, str(error))
                return
            connection = Connection(sock, peer, decoder, True)
            connection.handshake_deadline = time.time() + HANDSHAKE_TIMEOUT
            self.handshakes[sock.fileno()] = connection
            handler = self._handshake
        else:
            connection = Connection(sock, peer, decoder, False)
            handler = self._read_stream
        self.connections[sock.fileno()] = connection
        self.counters.connections_accepted += 1
        self.counters.connections_open = len(self.connections)
        self.selector.register(sock, selectors.EVENT_READ, (handler, connection))
        if tls:
            self._handshake(connection)

    # TLS handshakes -----------------------------------------------------

    def _handshake(self, connection: Connection) -> None:
        sock = connection.sock
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(sock, selectors.EVENT_READ, (self._handshake, connection))
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                 (self._handshake, connection))
            return
        except (ssl.SSLError, OSError) as error:
            self._tls_failed(connection.peer, _tls_reason(error))
            self._close(connection)
            return
        del self.handshakes[sock.fileno()]
        self.selector.modify(sock, selectors.EVENT_READ, (self._read_stream, connection))
        log.debug('TLS connection from %s: %s', connection.peer, _subject_cn(sock))
        self._read_stream(connection)

    def _tls_failed(self, peer: str, reason: str) -> None:
        self.counters.tls_failures += 1
        self.reporter.report('tls', logging.WARNING, 'TLS handshake with %s failed: %s', peer, reason)

    def _expire_handshakes(self, now: float) -> None:
        for connection in [c for c in self.handshakes.values() if c.handshake_deadline <= now]:
            self._tls_failed(connection.peer, 'no complete handshake within %.1f s' % HANDSHAKE_TIMEOUT)
            self._close(connection)

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
        counters = self.counters
        counters.bytes_received += len(data)
        decoder = connection.decoder
        frames = decoder.feed(data)
        if frames:
            counters.frames_received += len(frames)
            self.processor.process(frames, connection.peer, self.now, self.prefix, connection)
        if decoder.error is not None:
            self._frame_error(connection.peer, decoder.error)
            self._close(connection)

    def _frame_error(self, peer: str, error: FrameError) -> None:
        self.counters.reject(error.reason)
        self.reporter.report('frame:' + error.reason, logging.WARNING,
                             'closing the connection from %s: %s', peer, error)

    def _finish(self, connection: Connection) -> None:
        """The peer closed: a partial frame left behind is counted, not parsed."""
        if connection.decoder.pending_bytes and connection.decoder.error is None:
            self.counters.reject('truncated')
            self.reporter.report('truncated', logging.WARNING,
                                 'connection from %s closed in the middle of a frame (%d bytes dropped)',
                                 connection.peer, connection.decoder.pending_bytes)
        self._close(connection)

    def _close(self, connection: Connection) -> None:
        sock = connection.sock
        fd = sock.fileno()
        if fd >= 0:
            self.selector.unregister(sock)
            self.connections.pop(fd, None)
            self.handshakes.pop(fd, None)
        self._acks_owed.pop(connection, None)
        self.processor.ack_targets.pop(connection, None)
        sock.close()
        self.counters.connections_open = len(self.connections)

    def _read_datagrams(self, listener: Listener) -> None:
        sock = listener.sock
        max_size = self.config.max_message_size
        process = self.processor.process
        counters = self.counters
        for _ in range(UDP_BATCH):
            try:
                data, address = sock.recvfrom(UDP_DATAGRAM_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.reporter.report('udp', logging.WARNING, 'UDP receive failed: %s', error)
                return
            counters.bytes_received += len(data)
            try:
                frame = decode_datagram(data, max_size)
            except FrameError as error:
                counters.reject(error.reason)
                self.reporter.report('frame:' + error.reason, logging.WARNING,
                                     'dropped a datagram from %s: %s', format_peer(address), error)
                continue
            counters.frames_received += 1
            process((frame,), format_peer(address), self.now, self.prefix)

    # stopping -----------------------------------------------------------

    def _drain_datagrams(self, listener: Listener, deadline: float) -> None:
        while time.time() < deadline:
            before = self.counters.bytes_received
            self._read_datagrams(listener)
            if self.counters.bytes_received == before:
                return

    def close_listeners(self) -> None:
        for listener in self.listeners:
            if not self._accept_paused_until or listener.transport == 'udp':
                self.selector.unregister(listener.sock)
            listener.sock.close()
        self.listeners = []

    def drain(self) -> None:
        """At stop: read what the clients have already sent, then close them.

        Listeners close first; every connection is read in turn, round after
        round, until a round brings nothing new from it (bounded in time), so
        one client that never stops sending cannot starve the others.
        """
        deadline = time.time() + DRAIN_SECONDS
        for listener in self.listeners:
            if listener.transport == 'udp':
                self._drain_datagrams(listener, deadline)
        self.close_listeners()
        reading = []
        for connection in list(self.connections.values()):
            if connection.sock.fileno() in self.handshakes:
                self._close(connection)
            else:
                reading.append(connection)
        while reading and time.time() < deadline:
            still_sending = []
            for connection in reading:
                before = connection.decoder.pending_bytes, self.counters.bytes_received
                self.now = time.time()
                self.prefix = self.clock.prefix(self.now)
                self._read_stream(connection)
                if connection.sock.fileno() < 0:
                    continue
                if before == (connection.decoder.pending_bytes, self.counters.bytes_received):
                    self.end_pass(self.now, force=True)
                    self._finish(connection)
                else:
                    still_sending.append(connection)
            reading = still_sending
        for connection in reading:
            self.end_pass(time.time(), force=True)
            self._finish(connection)
        self.end_pass(time.time(), force=True)


def _tls_reason(error: Exception) -> str:
    verify = getattr(error, 'verify_message', None)
    reason = getattr(error, 'reason', None)
    if verify:
        return '%s (%s)' % (verify, reason or error)
    return str(reason or error)


def _subject_cn(sock: ssl.SSLSocket) -> str:
    certificate = sock.getpeercert() or {}
    for rdn in certificate.get('subject', ()):
        for key, value in rdn:
            if key == 'commonName':
                return 'CN=%s' % value
    return 'no subject CN'
