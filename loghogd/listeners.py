"""Listening sockets, the TLS context and the socket options of accepted connections.

Everything here runs at start-up, at reload, at stop, once per accepted
socket or when descriptors run out; the loop that serves the sockets is
in server.py.
"""

import errno
import ipaddress
import logging
import resource
import selectors
import socket
import ssl
from typing import Callable, Dict, List, Tuple

from loghogd.config import ListenAddress, ServerConfig
from loghogd.wakeup import NEVER
from loghogd.writer import MAX_OPEN_FILES

log = logging.getLogger('loghogd')

LISTEN_BACKLOG = 1024
RESERVED_DESCRIPTORS = MAX_OPEN_FILES + 64
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 6
"""A peer that vanished (power off, cable pulled) is found out after 60 + 6 x 10 s."""


class ServerError(Exception):
    """The server cannot start (address in use, unreadable certificate, ...)."""


class Listener:
    __slots__ = ('sock', 'transport', 'address', 'syslog')

    def __init__(self, sock: socket.socket, transport: str, address: ListenAddress, syslog: bool = False) -> None:
        self.sock = sock
        self.transport = transport
        self.address = address
        self.syslog = syslog


def raise_descriptor_limit(configured: int) -> int:
    """Raise the open-file limit as far as allowed; return max_connections fitted to it.

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

    No session tickets: TLS 1.3 tickets stall the deployed 0.7 client, and a
    TLS 1.2 session resumed from a ticket would skip the certificate and CRL
    check. Every connection makes a full handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
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


def open_listener(address: ListenAddress, kind: int, transport: str, udp_receive_buffer: int,
                  syslog: bool = False) -> Listener:
    """A bound, listening, non-blocking socket; ServerError says why not."""
    family = socket.AF_INET6 if ':' in address.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        elif udp_receive_buffer:
            _size_receive_buffer(sock, udp_receive_buffer)
        sock.bind((address.host, address.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        sock.close()
        raise ServerError('cannot listen on %s %s: %s' % (
            transport.upper(), format_peer((address.host, address.port)), error.strerror or error)) from None
    sock.setblocking(False)
    return Listener(sock, transport, address, syslog)


def _size_receive_buffer(sock: socket.socket, size: int) -> None:
    """Bursts of datagrams wait in the kernel; root may exceed rmem_max."""
    force = getattr(socket, 'SO_RCVBUFFORCE', None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def prepare_accepted(sock: socket.socket) -> None:
    """Non-blocking, with TCP keepalive so that a vanished peer frees its slot."""
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (('TCP_KEEPIDLE', KEEPALIVE_IDLE), ('TCP_KEEPINTVL', KEEPALIVE_INTERVAL),
                          ('TCP_KEEPCNT', KEEPALIVE_PROBES)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def bound_address(listener: Listener) -> Dict[str, object]:
    """What listening.json says about a listener: its transport, host and resolved port."""
    port = listener.sock.getsockname()[1]
    name = 'syslog-' + listener.transport if listener.syslog else listener.transport
    log.info('listening on %s %s', name.upper(), format_peer((listener.address.host, port)))
    return {'transport': name, 'host': listener.address.host, 'port': port}


def tls_reason(error: Exception) -> str:
    verify = getattr(error, 'verify_message', None)
    reason = getattr(error, 'reason', None)
    if verify:
        return '%s (%s)' % (verify, reason or error)
    return str(reason or error)


def subject_cn(sock: ssl.SSLSocket) -> str:
    certificate = sock.getpeercert() or {}
    for rdn in certificate.get('subject', ()):
        for key, value in rdn:
            if key == 'commonName':
                return 'CN=%s' % value
    return 'no subject CN'


def peer_host(address: Tuple) -> str:
    """What a peer's limits are counted under: its IPv4 address, or the /64 of its IPv6 address.

    One IPv6 host usually has a whole /64 to pick source addresses from.
    """
    host = str(address[0]) if isinstance(address, tuple) and address else str(address)
    if ':' not in host:
        return host
    try:
        return str(ipaddress.IPv6Network((host.partition('%')[0], 64), strict=False))
    except ValueError:
        return host


Handler = Callable[[Listener], None]


class Listeners:
    """The listening sockets on the selector: opened at start, off it while descriptors run out, closed at stop."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self.all: List[Listener] = []
        self.paused_until = 0.0

    def open(self, config: ServerConfig, on_accept: Handler, on_datagrams: Handler) -> List[Dict[str, object]]:
        """Open every configured listener; return what is bound (ports resolved)."""
        wanted = []
        for syslog, plain, tls in ((False, config.listen, config.listen_ssl),
                                   (True, config.listen_syslog, config.listen_syslog_tls)):
            wanted += [(address, socket.SOCK_STREAM, 'tcp', syslog) for address in plain]
            wanted += [(address, socket.SOCK_DGRAM, 'udp', syslog) for address in plain]
            wanted += [(address, socket.SOCK_STREAM, 'tls', syslog) for address in tls]
        bound = []
        for address, kind, transport, syslog in wanted:
            listener = open_listener(address, kind, transport, config.udp_receive_buffer, syslog)
            self.all.append(listener)
            handler = on_datagrams if transport == 'udp' else on_accept
            self.selector.register(listener.sock, selectors.EVENT_READ, (handler, listener))
            bound.append(bound_address(listener))
        return bound

    def _streams(self) -> List[Listener]:
        return [listener for listener in self.all if listener.transport != 'udp']

    def pause_accepting(self, until: float) -> None:
        """Out of descriptors: the stream listeners leave the selector until `until`."""
        if not self.paused_until:
            for listener in self._streams():
                self.selector.unregister(listener.sock)
        self.paused_until = until

    def resume_accepting_if_due(self, now: float, on_accept: Handler) -> None:
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            for listener in self._streams():
                self.selector.register(listener.sock, selectors.EVENT_READ, (on_accept, listener))

    def next_wakeup(self, now: float) -> float:
        """Seconds until accepting resumes (NEVER when it is not paused)."""
        return max(0.0, self.paused_until - now) if self.paused_until else NEVER

    def datagram_listeners(self) -> List[Listener]:
        return [listener for listener in self.all if listener.transport == 'udp']

    def close(self) -> None:
        """Close them all; stream listeners paused for descriptors are off the selector already."""
        for listener in self.all:
            if not self.paused_until or listener.transport == 'udp':
                self.selector.unregister(listener.sock)
            listener.sock.close()
        self.all = []
