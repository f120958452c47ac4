"""LoghogHandler: a logging handler that ships records to loghogd and never hurts the application.

A drop-in replacement for the loghog 0.7 handler: same arguments; by
default it asks for acknowledgements (protocol 1.1) and falls back to 0.7's
behaviour against a server that never gives one, and with
acknowledged=False it sends 0.7's bytes exactly. The application thread only formats and encodes a record
and queues it; one sender thread per handler owns the connection, so a slow
or dead server costs the application nothing but, once the queue is full,
its oldest records (counted, and reported on the next successful send).
"""

import _thread
import logging
import os
import random
import socket
import sys
import threading
import time
import uuid
import weakref
from typing import Any, Dict, Optional, Union

from loghog.encoder import RecordEncoder
from loghog.outbox import Outbox
from loghog.protocol import MAX_UDP_PAYLOAD
from loghog.transport import Connection, SendError, connect_datagram, connect_stream, make_tls_context

CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0
MAX_BATCH_BYTES = 256 * 1024
IDLE_WAKEUP = 1.0
ABORT_GRACE = 0.5
ACK_POLL = 0.02
ACK_FALLBACK_SECONDS = 10.0

_live_handlers: 'weakref.WeakSet[LoghogHandler]' = weakref.WeakSet()


class Backoff:
    """Exponential delays with jitter, so a fleet of clients does not reconnect in step."""

    def __init__(self, first: float = BACKOFF_FIRST, maximum: float = BACKOFF_MAX) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def next_delay(self) -> float:
        delay = random.uniform(self._next / 2, self._next)
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first


class LoghogHandler(logging.Handler):
    """Send each record as one LogHog frame to loghogd over TCP, UDP or mutual TLS.

    The positional order is the 0.7 client's. `secret` (str or bytes) signs
    every record; `ssl_info` is {'pemfile': key+cert, 'cacert': CA bundle}
    with optional 'keyfile' and 'check_hostname'. At most `max_buffer_size`
    records wait for the server. close() (called by logging.shutdown at
    exit) waits up to `flush_timeout` seconds for them to be sent.
    With `acknowledged` (the default), over TCP or TLS, a record leaves the
    queue only when the server acknowledges it (protocol 1.1), so records in
    flight when the server restarts are resent and the server drops the
    duplicates. A connection that brings back no ACK within
    `ack_fallback_seconds` of carrying records is a server without 1.1: the
    handler says so once and sends as 0.7 did from then on.
    `acknowledged=False` sends exactly the 0.7 client's bytes.
    """

    def __init__(self, app_name: str, host: str = 'localhost', port: int = 5566, stream: bool = True,
                 secret: Union[str, bytes, None] = None, compression: bool = False,
                 hostname: Optional[str] = None, ssl_info: Optional[Dict[str, Any]] = None,
                 max_buffer_size: int = 1024, print_debug: bool = False, *,
                 flush_timeout: float = 5.0, acknowledged: bool = True,
                 ack_fallback_seconds: float = ACK_FALLBACK_SECONDS) -> None:
        if ssl_info and not stream:
            raise ValueError('ssl_info needs stream=True: TLS is not available over UDP')
        if max_buffer_size < 1:
            raise ValueError('max_buffer_size must be at least 1, not %r' % (max_buffer_size,))
        if not ack_fallback_seconds > 0:
            raise ValueError('ack_fallback_seconds must be above 0, not %r' % (ack_fallback_seconds,))
        address = (host, int(port))
        self._tls = make_tls_context(ssl_info) if ssl_info else None
        logging.Handler.__init__(self)  # only now: it registers the handler with logging.shutdown
        self.app_name = app_name
        self.address = address
        self.use_stream = stream
        self.secret = secret or None
        self.compression = bool(compression)
        self.hostname = hostname or socket.gethostname()
        self.max_buffer_size = max_buffer_size
        self.print_debug = print_debug
        self.flush_timeout = flush_timeout
        self._acknowledged = bool(acknowledged and stream)
        self.ack_fallback_seconds = ack_fallback_seconds
        self._ever_acknowledged = False
        self.pemfile = ssl_info['pemfile'] if ssl_info else None
        self.cacert = ssl_info['cacert'] if ssl_info else None
        self._encoder = RecordEncoder(app_name, self.hostname, self.secret, self.compression)
        self._reset_delivery()
        _live_handlers.add(self)

    @property
    def dropped_total(self) -> int:
        """Records lost in this process so far: queue overflow, oversized datagrams, left at close."""
        return self._outbox.dropped_total

    @property
    def queued(self) -> int:
        """Records waiting to be sent or, in acknowledged mode, to be acknowledged."""
        return len(self._outbox)

    @property
    def acknowledged(self) -> bool:
        """Whether records wait for the server's ACK (false after falling back to version 1)."""
        return self._acknowledged

    def emit(self, record: logging.LogRecord) -> None:
        """Encode the record and queue it; the network is the sender thread's business."""
        try:
            if self._closed:
                self._outbox.count_dropped()
                return
            module, stamp, nsecs, body = record.name, int(record.created), int(record.msecs * 10**6), \
                self.format(record)
            if self._acknowledged:
                client_id, encode = self._client_id, self._encoder.encode
                self._outbox.push_numbered(lambda seq: encode(module, stamp, nsecs, body, client_id, seq))
            else:
                frame = self._encoder.encode(module, stamp, nsecs, body)
                if not self.use_stream and len(frame) > MAX_UDP_PAYLOAD:
                    self._outbox.count_dropped()
                    return
                self._outbox.push(frame)
            if self._sender_done is None:
                self._start_sender()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Nudge the sender; delivery stays asynchronous (close() is the call that waits)."""
        self._outbox.wake()

    def close(self) -> None:
        """Send what is queued, waiting at most `flush_timeout` seconds, then stop the sender."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._deadline = time.monotonic() + self.flush_timeout
            sender_done = self._sender_done
        if sender_done is not None:
            self._interrupt.set()
            self._outbox.wake()
            if not sender_done.wait(self.flush_timeout):  # still in a send the server is not reading
                connection = self._connection
                if connection is not None:
                    connection.abort()
                sender_done.wait(ABORT_GRACE)
        left = self._outbox.discard()
        if left:
            self._warn('%d record(s) not %s by %s:%s within flush_timeout=%ss; they may be lost%s'
                       % (left, 'acknowledged' if self._acknowledged else 'delivered', self.address[0],
                          self.address[1], self.flush_timeout, self._never_acknowledged_hint()))
        if sender_done is None or sender_done.is_set():
            self._drop_connection()
        logging.Handler.close(self)

    def _never_acknowledged_hint(self) -> str:
        if not self._acknowledged or self._ever_acknowledged:
            return ''
        return (' (the server never acknowledged a record: a loghogd without acknowledged delivery writes what it'
                ' was sent, so there they most likely arrived; pass acknowledged=False for such a server)')

    def _reset_delivery(self) -> None:
        """Fresh queue, no connection, no thread: at construction and in a forked child."""
        self._outbox = Outbox(self.max_buffer_size)
        self._connection: Optional[Connection] = None
        self._sender_done: Optional[threading.Event] = None  # set when the sender thread has ended
        self._state_lock = threading.Lock()
        self._interrupt = threading.Event()
        self._closed = False
        self._deadline = 0.0
        self._client_id = uuid.uuid4().hex  # a forked child numbers its records afresh, under its own id
        self._connection_acknowledged = False  # this connection has brought back an ACK
        self._ack_wait_started: Optional[float] = None  # since when it carries records and no ACK came yet

    def _after_fork_in_child(self) -> None:
        connection = self._connection
        closed = self._closed
        self._reset_delivery()
        self._closed = closed
        if connection is not None:
            try:
                connection.close()  # the parent's copy stays open; this only frees our descriptor
            except OSError:
                pass

    def _start_sender(self) -> None:
        with self._state_lock:
            if self._sender_done is not None or self._closed:
                return
            self._sender_done = threading.Event()
        # A daemon thread. Not threading.Thread: its start() waits until the new thread has run,
        # which cost the first logging call up to a few ms on a busy machine.
        _thread.start_new_thread(self._run_sender, (self._sender_done,))

    def _run_sender(self, done: threading.Event) -> None:
        try:
            self._send_until_closed()
        finally:
            done.set()

    def _send_until_closed(self) -> None:
        """Send queued records until close() and the queue is empty or its deadline passes."""
        backoff = Backoff()
        outbox = self._outbox
        failing = False
        while not self._finished():
            try:
                if not self._wait_for_work():
                    continue
                if self._connection is None:
                    self._connection = self._connect()
                    self._connection_acknowledged = False
                    self._ack_wait_started = None
                    self._debug('connected to %s:%s' % self.address)
                elif not self._server_still_there():
                    self._debug('server closed the connection; reconnecting')
                    self._drop_connection()
                    outbox.rewind()
                    continue
                if outbox.has_unsent():
                    self._send_batch()
                backoff.reset()
                failing = False
            except Exception as error:
                if not isinstance(error, (OSError, ValueError)):
                    self._warn('unexpected sender error, retrying: %r' % (error,))
                elif not failing or self.print_debug:
                    self._warn('cannot deliver to %s:%s (%s); retrying%s' % (
                        self.address[0], self.address[1], error,
                        '' if self.print_debug else ', quietly until it works again'))
                failing = True
                self._drop_connection()
                outbox.rewind()
                self._sleep(backoff.next_delay())
        self._drop_connection()

    def _wait_for_work(self) -> bool:
        """Wait for records to send or, with records awaiting an ACK, for the server to answer."""
        if self._acknowledged and self._connection is not None and self._outbox.last_in_flight():
            if not self._outbox.has_unsent():
                self._connection.wait_readable(ACK_POLL)
            return True
        return self._outbox.wait_for_unsent(IDLE_WAKEUP)

    def _server_still_there(self) -> bool:
        """False when the server closed the connection; in acknowledged mode, apply its ACKs."""
        if not self._acknowledged:
            return not self._connection.peer_closed()
        try:
            acknowledged = self._connection.read_acks()
        except ConnectionError:
            return False
        if acknowledged:
            self._outbox.confirm(acknowledged)
            self._connection_acknowledged = self._ever_acknowledged = True
        elif not self._connection_acknowledged:
            self._check_acks_arrive()
        return True

    def _check_acks_arrive(self) -> None:
        """Fall back to version 1 when this connection carried records for ack_fallback_seconds and no ACK came.

        Only a connection that never brought back an ACK counts: a server that
        acknowledged once speaks 1.1 and is only slow, and falling back would
        give up exactly-once for good. Records sent before the fallback count
        as delivered, as version 1 counts what the kernel accepted.
        """
        in_flight = self._outbox.last_in_flight()
        if not in_flight:
            return
        now = time.monotonic()
        if self._ack_wait_started is None:
            self._ack_wait_started = now
        elif now - self._ack_wait_started > self.ack_fallback_seconds:
            self._acknowledged = False
            self._outbox.confirm(in_flight)
            self._warn('%s:%s sent no acknowledgement for %g s; sending without acknowledgements (as loghog 0.7)'
                       ' from now on' % (self.address[0], self.address[1], self.ack_fallback_seconds))

    def _finished(self) -> bool:
        if not self._closed:
            return False
        return len(self._outbox) == 0 or time.monotonic() >= self._deadline

    def _connect(self) -> Connection:
        timeout = CONNECT_TIMEOUT
        if self._closed:
            timeout = max(0.05, min(timeout, self._deadline - time.monotonic()))
        if not self.use_stream:
            return connect_datagram(self.address, self._outbox.count_dropped)
        connection = connect_stream(self.address, timeout, self._tls)
        connection.sock.settimeout(SEND_TIMEOUT)
        return connection

    def _send_batch(self) -> None:
        batch = self._outbox.take_unsent(MAX_BATCH_BYTES)
        if not batch:
            return
        acknowledged = self._acknowledged  # then only an ACK confirms a record
        try:
            last_sent = self._connection.send(batch)
        except SendError as error:
            if error.last_sent and not acknowledged:
                self._outbox.confirm(error.last_sent)
            raise
        if not acknowledged:
            self._outbox.confirm(last_sent)
        dropped = self._outbox.take_dropped()
        if dropped:
            self._warn('%d record(s) were dropped before this send (queue of %d full or record too big)'
                       % (dropped, self.max_buffer_size))

    def _sleep(self, delay: float) -> None:
        """Back off, but no later than close()'s deadline; close() cuts a long wait short."""
        if self._closed:
            delay = min(delay, max(0.0, self._deadline - time.monotonic()))
        if self._interrupt.wait(delay):
            self._interrupt.clear()

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except OSError:
                pass

    def _warn(self, message: str) -> None:
        try:
            sys.stderr.write('loghog[%s]: %s\n' % (self.app_name, message))
        except (OSError, ValueError, AttributeError):
            pass  # no usable stderr (closed at exit, daemonized): nothing else to tell

    def _debug(self, message: str) -> None:
        if self.print_debug:
            self._warn(message)


def _reset_handlers_in_child() -> None:
    handlers = list(_live_handlers)
    for handler in handlers:
        handler._after_fork_in_child()
    multiprocessing_util = sys.modules.get('multiprocessing.util')
    if multiprocessing_util is not None:
        # multiprocessing ends a child with os._exit(), so logging.shutdown() never runs there;
        # its exit finalizers do, but it clears them after this hook: register through its own
        # after-fork list instead, which it runs once the child is set up.
        for handler in handlers:
            multiprocessing_util.register_after_fork(handler, _close_at_process_exit)


def _close_at_process_exit(handler: LoghogHandler) -> None:
    sys.modules['multiprocessing.util'].Finalize(handler, handler.close, exitpriority=0)


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_reset_handlers_in_child)
