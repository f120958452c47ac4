"""Connections from the sender thread to loghogd: TCP, TLS over TCP, and UDP.

Only the sender thread calls these, so every call here may block (bounded by
a timeout). A send reports exactly which records the kernel accepted, so the
caller resends the rest and nothing that was fully written.
"""

import errno
import math
import select
import socket
import ssl
import struct
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from loghog.batch import FLAG_CAPS, decode_caps_ack
from loghog.batcher import Frame
from loghog.protocol import FLAG_ACK, MAX_UDP_PAYLOAD, StreamDecoder, decode_ack

Address = Tuple[str, int]
MAX_ACK_FRAME = 4096
"""The largest frame a server sends: an ACK, or an ACK with its capabilities (protocol 1.2)."""
READ_SIZE = 65536
QUICK_READS = sys.platform.startswith('linux') and hasattr(socket, 'MSG_DONTWAIT')
"""Whether a plain TCP connection stays a blocking socket with the kernel's send timeout (SO_SNDTIMEO):
then reading ACKs is one recv() and a send one send(). A Python socket timeout costs a poll() before
each, and switching it off to read two more calls; each call lets a busy application thread take the
GIL, which the sender then waits for."""


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` has data (or EOF) within `timeout` seconds.

    poll() where there is one: select() fails on a descriptor numbered 1024
    or more, which an application with many open files easily has.
    """
    if hasattr(select, 'poll'):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(math.ceil(timeout * 1000)))
    return bool(select.select([sock], [], [], timeout)[0])


class SendError(OSError):
    """A send failed part way; `last_sent` is the seq of the last whole record written (0: none)."""

    def __init__(self, last_sent: int, cause: BaseException) -> None:
        super().__init__('send failed: %s' % (cause,))
        self.last_sent = last_sent


def make_tls_context(ssl_info: Dict[str, Any]) -> ssl.SSLContext:
    """A client context that verifies the server against `cacert` and presents `pemfile`.

    The hostname check is off unless ssl_info['check_hostname'] is true,
    because deployed 0.7 clients never checked it and server certificates
    made for them may not name the host.
    """
    missing = [key for key in ('pemfile', 'cacert') if not ssl_info.get(key)]
    if missing:
        raise ValueError('ssl_info needs %s (got keys %s)' % (' and '.join(repr(k) for k in missing),
                                                             sorted(ssl_info)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = bool(ssl_info.get('check_hostname', False))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=ssl_info['cacert'])
    context.load_cert_chain(ssl_info['pemfile'], keyfile=ssl_info.get('keyfile'))
    return context


class StreamConnection:
    """Frames back to back on one TCP (or TLS) connection.

    `answered` turns true with the server's first ACK; `caps` holds the
    capabilities that ACK carried (protocol 1.2), or stays None.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.answered = False
        self.caps: Optional[Dict[str, Any]] = None
        self._acks = StreamDecoder(max_size=MAX_ACK_FRAME, allowed_flags=FLAG_ACK | FLAG_CAPS)
        self._quick_reads = False

    def set_send_timeout(self, seconds: float) -> None:
        """How long a send may wait for the server to read (QUICK_READS says how)."""
        if QUICK_READS and not isinstance(self.sock, ssl.SSLSocket):
            self.sock.settimeout(None)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                 struct.pack('@ll', int(seconds), int(seconds % 1 * 1000000)))
            self._quick_reads = True
        else:
            self.sock.settimeout(seconds)

    def peer_closed(self) -> bool:
        """True when the server has closed its end; a version-1 server sends nothing else."""
        try:
            while self._read_available():
                pass
            return False
        except (ConnectionError, OSError, ValueError):
            return True

    def read_acks(self) -> int:
        """The highest seq acknowledged in what the server sent since the last call (0: none).

        Raises ConnectionError when the server has closed the connection or sent
        something other than ACK frames.
        """
        highest = 0
        data = self._read_available()
        while data:
            for flags, payload in self._acks.feed(data):
                if flags & FLAG_CAPS:
                    seq, caps = decode_caps_ack(payload)
                    if not self.answered:
                        self.caps = caps
                else:
                    seq = decode_ack(payload)
                self.answered = True
                highest = max(highest, seq)
            if self._acks.error is not None:
                raise ConnectionError('server sent a frame that is not an ACK: %s' % self._acks.error)
            data = b'' if self._quick_reads and len(data) < READ_SIZE else self._read_available()
        return highest

    def wait_readable(self, timeout: float) -> None:
        """Wait up to `timeout` for the server to send something (an ACK)."""
        if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            readable(self.sock, timeout)

    def _read_available(self) -> bytes:
        """What the server sent, without waiting: b'' when nothing is there; ConnectionError at EOF."""
        if self._quick_reads:
            try:
                data = self.sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return b''
        else:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not pending and not readable(self.sock, 0):
                return b''
            timeout = self.sock.gettimeout()
            self.sock.settimeout(0)
            try:
                data = self.sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return b''  # a TLS record with no application data (e.g. a session ticket)
            finally:
                self.sock.settimeout(timeout)
        if not data:
            raise ConnectionError('server closed the connection')
        return data

    def send(self, batch: List[Frame]) -> int:
        """Write the batch; return the seq of its last record or raise SendError."""
        data = memoryview(b''.join(frame for _, frame in batch))
        written = 0
        try:
            while written < len(data):
                written += self.sock.send(data[written:])
        except (OSError, ValueError) as error:
            raise SendError(_last_whole_record(batch, written), error) from error
        return batch[-1][0]

    def abort(self) -> None:
        """Make a send blocked in another thread fail now (the TLS layer is left to that thread)."""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


class DatagramConnection:
    """One frame per datagram on a connected UDP socket."""

    def __init__(self, sock: socket.socket, on_oversized: Callable[[], None]) -> None:
        self.sock = sock
        self._on_oversized = on_oversized

    def peer_closed(self) -> bool:
        return False

    def read_acks(self) -> int:
        return 0  # never acknowledged on UDP

    def wait_readable(self, timeout: float) -> None:
        """Nothing to wait for: acknowledgements never come over UDP."""

    def send(self, batch: List[Frame]) -> int:
        """Send each frame as a datagram; frames too big for one are dropped and counted."""
        last_sent = 0
        for seq, frame in batch:
            if len(frame) > MAX_UDP_PAYLOAD:
                self._on_oversized()
            else:
                try:
                    self.sock.send(frame)
                except OSError as error:
                    if error.errno != errno.EMSGSIZE:
                        raise SendError(last_sent, error) from error
                    self._on_oversized()
            last_sent = seq
        return last_sent

    def abort(self) -> None:
        """Nothing to do: a datagram send does not wait for the server."""

    def close(self) -> None:
        self.sock.close()


Connection = Union[StreamConnection, DatagramConnection]


def connect_stream(address: Address, timeout: float, tls: Optional[ssl.SSLContext]) -> StreamConnection:
    """Connect (and finish the TLS handshake) or raise; a failed handshake leaves no socket open."""
    sock = socket.create_connection(address, timeout=timeout)
    if tls is None:
        return StreamConnection(sock)
    server_hostname = address[0] if tls.check_hostname else None
    try:
        tls_sock = tls.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    try:
        tls_sock.do_handshake()
    except BaseException:
        tls_sock.close()
        raise
    return StreamConnection(tls_sock)


def connect_datagram(address: Address, on_oversized: Callable[[], None]) -> DatagramConnection:
    """A UDP socket connected to the first address `address` resolves to."""
    family, socktype, proto, _, sockaddr = socket.getaddrinfo(address[0], address[1], 0, socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return DatagramConnection(sock, on_oversized)


def _last_whole_record(batch: List[Frame], written: int) -> int:
    last = 0
    end = 0
    for seq, frame in batch:
        end += len(frame)
        if end > written:
            break
        last = seq
    return last
