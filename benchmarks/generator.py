"""Client processes: connect, report ready, wait for the start signal, send pre-built bytes.

The bytes are built in the harness before the processes fork, so a
generator does no encoding after the start signal: a stream sender hands
its whole byte string to one `sendall`, a datagram sender only paces. An
acknowledged-mode sender reads the server's ACK frames on a second thread
so that they never fill the socket buffers and stall the server.
"""

import multiprocessing
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from benchmarks.servers import ServerError, die_with_parent
from loghog.protocol import FLAG_ACK, FrameError, StreamDecoder, decode_ack

PACE_INTERVAL = 0.002
ACK_WAIT = 5.0
READY_TIMEOUT = 60.0


@dataclass
class TlsClient:
    cacert: str
    pemfile: str

    def context(self) -> ssl.SSLContext:
        """Verifies the server against the run's CA, never the host name, like the 0.7 client."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(self.cacert)
        context.load_cert_chain(self.pemfile)
        return context


@dataclass
class SenderSpec:
    """What one generator process sends, where, and how."""
    address: Tuple[str, int]
    payload: Union[bytes, Sequence[bytes]]
    records: int
    datagram: bool = False
    rate: Optional[float] = None
    tls: Optional[TlsClient] = None
    ack: bool = False
    timeout: float = 300.0


class AckReader(threading.Thread):
    """Drains ACK frames from the socket and keeps the highest acknowledged seq."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.acked = 0
        self.frames = 0
        self.error: Optional[str] = None

    def run(self) -> None:
        decoder = StreamDecoder(allowed_flags=FLAG_ACK)
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            for flags, payload in decoder.feed(data):
                try:
                    self.acked = max(self.acked, decode_ack(payload))
                    self.frames += 1
                except FrameError as error:
                    self.error = str(error)
            if decoder.error is not None:
                self.error = str(decoder.error)
                return


def connect(spec: SenderSpec) -> socket.socket:
    if spec.datagram:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(spec.address)
        return sock
    sock = socket.create_connection(spec.address, timeout=spec.timeout)
    if spec.tls is not None:
        sock = spec.tls.context().wrap_socket(sock)
    return sock


def send_paced(sock: socket.socket, datagrams: Sequence[bytes], rate: float) -> int:
    """Send in small bursts every PACE_INTERVAL so the average stays at `rate`; count refusals."""
    per_burst = max(1, round(rate * PACE_INTERVAL))
    send = sock.send
    refused = 0
    due = time.perf_counter()
    for first in range(0, len(datagrams), per_burst):
        for datagram in datagrams[first:first + per_burst]:
            try:
                send(datagram)
            except ConnectionRefusedError:
                refused += 1
        due += per_burst / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return refused


def run_sender(index: int, spec: SenderSpec, channel, start, stop) -> None:
    """The body of one generator process; everything it learns goes to `channel`."""
    die_with_parent()
    sock = None
    try:
        sock = connect(spec)
        reader = AckReader(sock) if spec.ack else None
        channel.put(('ready', index, None))
        if not start.wait(spec.timeout):
            raise TimeoutError('no start signal within %.0f s' % spec.timeout)
        if stop.is_set():
            return
        if reader is not None:
            reader.start()
        began = time.perf_counter()
        if spec.datagram:
            refused = send_paced(sock, spec.payload, spec.rate)
        else:
            sock.sendall(spec.payload)
            refused = 0
        channel.put(('sent', index, {'send_seconds': time.perf_counter() - began, 'refused': refused}))
        stop.wait(spec.timeout)
        result: Dict[str, Any] = {}
        if reader is not None:
            deadline = time.monotonic() + ACK_WAIT
            while reader.acked < spec.records and time.monotonic() < deadline and reader.is_alive():
                time.sleep(0.01)
            result = {'acked': reader.acked, 'ack_frames': reader.frames, 'ack_error': reader.error}
        channel.put(('done', index, result))
    except BaseException as error:
        channel.put(('error', index, '%s: %s' % (type(error).__name__, error)))
    finally:
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class SenderGroup:
    """The generator processes of one run and what they report back."""

    def __init__(self, specs: Sequence[SenderSpec]) -> None:
        self.context = multiprocessing.get_context('fork')
        self.channel = self.context.Queue()
        self.start_signal = self.context.Event()
        self.stop_signal = self.context.Event()
        self.processes = [self.context.Process(target=run_sender, daemon=True,
                                                args=(index, spec, self.channel, self.start_signal,
                                                      self.stop_signal))
                          for index, spec in enumerate(specs)]
        self.sent: Dict[int, Dict[str, Any]] = {}
        self.done: Dict[int, Dict[str, Any]] = {}
        self.errors: List[str] = []

    def launch(self) -> None:
        for process in self.processes:
            process.start()
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT
        while ready < len(self.processes):
            kind, index, value = self._next(deadline, 'generators to connect')
            if kind == 'error':
                raise ServerError('generator %d failed before the start: %s' % (index, value))
            ready += kind == 'ready'

    def _next(self, deadline: float, what: str) -> Tuple[str, int, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerError('timed out waiting for %s' % what)
        try:
            return self.channel.get(timeout=remaining)
        except queue.Empty:
            raise ServerError('timed out waiting for %s' % what) from None

    def _drain(self) -> None:
        while True:
            try:
                kind, index, value = self.channel.get_nowait()
            except queue.Empty:
                return
            if kind == 'sent':
                self.sent[index] = value
            elif kind == 'done':
                self.done[index] = value
            elif kind == 'error':
                self.errors.append('generator %d: %s' % (index, value))
                self.sent.setdefault(index, {})
                self.done.setdefault(index, {})

    def all_sent(self) -> bool:
        self._drain()
        return len(self.sent) == len(self.processes)

    def finish(self, timeout: float) -> None:
        """Tell the generators to close and collect their last reports."""
        self.stop_signal.set()
        deadline = time.monotonic() + timeout
        while len(self.done) < len(self.processes) and time.monotonic() < deadline:
            self._drain()
            time.sleep(0.01)

    def close(self) -> None:
        """Release every generator (stop first, so a run cut short sends nothing more), then reap them."""
        self.stop_signal.set()
        self.start_signal.set()
        for process in self.processes:
            process.join(2)
            if process.is_alive():
                process.kill()
                process.join(2)
        self.channel.close()
