"""LoghogHandler: a logging handler that ships records to loghogd and never hurts the application.

A drop-in replacement for the loghog 0.7 handler: same arguments; by
default it asks for acknowledgements (protocol 1.1) and falls back to 0.7's
behaviour against a server that never gives one, and with
acknowledged=False it sends 0.7's bytes exactly; a server that says it takes
them (protocol 1.2) gets batches of structured records. The application
thread only formats a record and queues its fields (loghog.fields); one
sender thread per handler encodes them and owns the connection, so a slow
or dead server costs the application nothing but, once the queue is full,
its oldest records (counted, and reported on the next successful send).
"""

import _thread
import logging
import os
import socket
import sys
import threading
import time
import weakref
from typing import Any, Dict, Iterable, Optional, Union

from loghog.batcher import BatchEncoder, Encoding
from loghog.encoder import RecordEncoder
from loghog.fields import record_fields
from loghog.outbox import Outbox
from loghog.replay import Replayer
from loghog.sender import Route, Sender
from loghog.servers import Failover, ServerSpec, parse_servers
from loghog.spool import Spool, spool_supported
from loghog.transport import make_tls_context

ABORT_GRACE = 0.5
ACK_FALLBACK_SECONDS = 10.0
MAX_BUFFER_BYTES = 64 * 1024 * 1024
SPOOL_MAX_BYTES = 256 * 1024 * 1024
PRIMARY_RETRY_SECONDS = 30.0
RECORD_OVERHEAD = 256
"""What a queued record costs beyond its text: the tuple, the str headers, the frame's fixed fields."""

_live_handlers: 'weakref.WeakSet[LoghogHandler]' = weakref.WeakSet()


class LoghogHandler(logging.Handler):
    """Send each record as one LogHog frame to loghogd over TCP, UDP or mutual TLS.

    The positional order is the 0.7 client's. `secret` (str or bytes) signs
    every record; `ssl_info` is {'pemfile': key+cert, 'cacert': CA bundle}
    with optional 'keyfile' and 'check_hostname'. At most `max_buffer_bytes`
    of records (and `max_buffer_size` records, when given) wait for the
    server. close() (called by logging.shutdown at exit) waits up to
    `flush_timeout` seconds for them to be sent.
    With `acknowledged` (the default), over TCP or TLS, a record leaves the
    queue only when the server acknowledges it (protocol 1.1), so records in
    flight when the server restarts are resent and the server drops the
    duplicates. `host` may name several servers ('a,b:5567') or `servers`
    list them: the handler moves to the next when one is down or leaves
    records unacknowledged for `ack_fallback_seconds`, and back to the first
    when it is up again. With a single server, a connection that brings back
    no ACK within `ack_fallback_seconds` is a server without 1.1: the handler
    says so once and sends as 0.7 did from then on. `spool_dir` keeps
    unacknowledged records on disk too, for a later process to send if this
    one dies. `acknowledged=False` sends exactly the 0.7 client's bytes.
    """

    def __init__(self, app_name: str, host: str = 'localhost', port: int = 5566, stream: bool = True,
                 secret: Union[str, bytes, None] = None, compression: bool = False,
                 hostname: Optional[str] = None, ssl_info: Optional[Dict[str, Any]] = None,
                 max_buffer_size: Optional[int] = None, print_debug: bool = False, *,
                 flush_timeout: float = 5.0, acknowledged: bool = True,
                 ack_fallback_seconds: float = ACK_FALLBACK_SECONDS,
                 servers: Optional[Iterable[ServerSpec]] = None, max_buffer_bytes: int = MAX_BUFFER_BYTES,
                 primary_retry_seconds: float = PRIMARY_RETRY_SECONDS, spool_dir: Optional[str] = None,
                 spool_max_bytes: int = SPOOL_MAX_BYTES) -> None:
        if ssl_info and not stream:
            raise ValueError('ssl_info needs stream=True: TLS is not available over UDP')
        for name, value in (('max_buffer_size', max_buffer_size), ('max_buffer_bytes', max_buffer_bytes),
                            ('spool_max_bytes', spool_max_bytes)):
            if value is not None and value < 1:
                raise ValueError('%s must be at least 1, not %r' % (name, value))
        for name, value in (('ack_fallback_seconds', ack_fallback_seconds),
                            ('primary_retry_seconds', primary_retry_seconds)):
            if not value > 0:
                raise ValueError('%s must be above 0, not %r' % (name, value))
        if spool_dir is not None and not (acknowledged and stream):
            raise ValueError('spool_dir needs acknowledged delivery (stream=True, acknowledged=True)')
        if spool_dir is not None and not spool_supported():
            raise ValueError('spool_dir needs flock() (a POSIX system)')
        addresses = parse_servers(host, port, servers)
        tls = make_tls_context(ssl_info) if ssl_info else None
        logging.Handler.__init__(self)  # only now: it registers the handler with logging.shutdown
        self.app_name = app_name
        self.servers = addresses
        self.address = addresses[0]
        self.use_stream = stream
        self.secret = secret or None
        self.compression = bool(compression)
        self.hostname = hostname or socket.gethostname()
        self.max_buffer_size = max_buffer_size
        self.max_buffer_bytes = max_buffer_bytes
        self.print_debug = print_debug
        self.flush_timeout = flush_timeout
        self.ack_fallback_seconds = ack_fallback_seconds
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self.pemfile = ssl_info['pemfile'] if ssl_info else None
        self.cacert = ssl_info['cacert'] if ssl_info else None
        self._wants_acks = bool(acknowledged and stream)
        self._default_format = type(self).format is logging.Handler.format
        self._route = Route(Failover(addresses, primary_retry_seconds), stream, tls, ack_fallback_seconds)
        self._encoder = RecordEncoder(app_name, self.hostname, self.secret, self.compression)
        self._batch_encoder = BatchEncoder(app_name, self.hostname, self.secret, self.compression)
        self._reset_delivery()
        _live_handlers.add(self)
        if spool_dir is not None:
            self._start_replayer()

    @property
    def dropped_total(self) -> int:
        """Records lost in this process so far: queue overflow, oversized records, left at close."""
        return self._outbox.dropped_total

    @property
    def oversized_total(self) -> int:
        """Records dropped because the server refused their size (its max_message_size), or cut to fit it."""
        return (self._sender.oversized_total + self._batch_encoder.cut_total
                + (self._replayer.oversized_total if self._replayer else 0))

    @property
    def queued(self) -> int:
        """Records waiting to be sent or, in acknowledged mode, to be acknowledged."""
        return len(self._outbox)

    @property
    def queued_bytes(self) -> int:
        """What the queued records count against max_buffer_bytes."""
        return self._outbox.bytes

    @property
    def spooled(self) -> bool:
        """Whether every queued record is in the spool (always true without one)."""
        return self._sender.spool is None or not self._outbox.has_unspooled()

    @property
    def acknowledged(self) -> bool:
        """Whether records wait for the server's ACK (false after falling back to version 1)."""
        return self._sender.acknowledged

    @property
    def current_server(self) -> tuple:
        """The (host, port) the sender uses or tries now."""
        return self._route.failover.current

    def handle(self, record: logging.LogRecord) -> Any:
        """Handler.handle without the handler's lock: emit() only queues, and the queue has a lock of its own."""
        kept = self.filter(record)
        if isinstance(kept, logging.LogRecord):  # Python 3.12 lets a filter return a changed record
            record = kept
        if kept:
            self.emit(record)
        return kept

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record and queue its fields; encoding and the network are the sender thread's business."""
        try:
            if self._closed:
                self._outbox.count_dropped()
                return
            if self.formatter is None and self._default_format and not (
                    record.exc_info or record.exc_text or record.stack_info):
                text = record.message = record.getMessage()  # what the default Formatter makes of it
            else:
                text = self.format(record)
            fields, size = record_fields(record, text)
            self._outbox.push(fields, size + RECORD_OVERHEAD)
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
            deadline = time.monotonic() + self.flush_timeout
            self._sender.deadline = deadline
            self._sender.closed = True
            sender_done = self._sender_done
        if sender_done is not None:
            self._sender.interrupt.set()
            self._outbox.wake()
            if not sender_done.wait(self.flush_timeout):  # still in a send the server is not reading
                connection = self._sender.connection
                if connection is not None:
                    connection.abort()
                sender_done.wait(ABORT_GRACE)
        if self._replayer is not None:
            if not self._replayer.done.wait(max(0.0, deadline - time.monotonic())):
                self._replayer.stopping.set()
                self._replayer.done.wait(ABORT_GRACE)
        self._report_left()
        logging.Handler.close(self)

    def _report_left(self) -> None:
        """Say what close() could not deliver, and why; what is in the spool stays there."""
        sender = self._sender
        dropped = self._outbox.take_dropped()
        if dropped:
            self._warn('%d record(s) were dropped while the server could not take them' % dropped)
        spool = sender.spool
        left = len(self._outbox)
        lost = self._outbox.discard(self._outbox.first_unspooled() if spool is not None else 0)
        if spool is not None:
            if left:
                spool.release()
            else:
                spool.remove()
        if not left:
            return
        if not sender.ever_connected:
            why = 'not delivered: could not connect to %s (%s)' % (self._route.failover.describe(),
                                                                  sender.last_error or 'not tried yet')
        else:
            why = '%s by %s within flush_timeout=%ss' % (
                'not acknowledged' if sender.acknowledged else 'not delivered', self._route.failover.describe(),
                self.flush_timeout)
        if left > lost:
            self._warn('%d record(s) %s; they stay in %s for the next process that uses it'
                       % (left - lost, why, self.spool_dir))
        if lost:
            self._warn('%d record(s) %s; they may be lost%s' % (lost, why, self._never_acknowledged_hint()))

    def _never_acknowledged_hint(self) -> str:
        sender = self._sender
        if not sender.acknowledged or sender.ever_acknowledged or not sender.ever_connected:
            return ''
        return (' (the server never acknowledged a record: a loghogd without acknowledged delivery writes what it'
                ' was sent, so there they most likely arrived; pass acknowledged=False for such a server)')

    def _reset_delivery(self) -> None:
        """Fresh queue, no connection, no thread: at construction and in a forked child."""
        self._outbox = Outbox(self.max_buffer_bytes, self.max_buffer_size)
        sender = Sender(self._route, self._encoder, self._outbox, None, self._wants_acks, self._warn,
                        self.print_debug, self._batch_encoder)
        if self.spool_dir is not None:
            sender.spool = Spool(self.spool_dir, sender.client_id, self.spool_max_bytes, self.app_name, self.hostname)
            self._outbox.spool_backed = True  # records over the memory bound stay queued in the spool
        self._sender = sender
        self._sender_done: Optional[threading.Event] = None  # set when the sender thread has ended
        self._replayer: Optional[Replayer] = None
        self._state_lock = threading.Lock()
        self._closed = False

    def _after_fork_in_child(self) -> None:
        sender = self._sender
        replayer = self._replayer
        closed = self._closed
        self._reset_delivery()
        self._closed = closed
        if sender.spool is not None:
            sender.spool.forget()
        if replayer is not None:
            replayer.forget_in_child()
        if sender.connection is not None:
            try:
                sender.connection.close()  # the parent's copy stays open; this only frees our descriptor
            except OSError:
                pass

    def _start_replayer(self) -> None:
        """Look for the spools of processes that died, and send them (in this process's first record's time)."""
        self._replayer = Replayer(self.spool_dir, self._sender.client_id, self._route, self._warn,
                                  Encoding(self.app_name, self.hostname, self.secret, self.compression))
        self._replayer.start()

    def _start_sender(self) -> None:
        with self._state_lock:
            if self._sender_done is not None or self._closed:
                return
            self._sender_done = threading.Event()
            if self.spool_dir is not None and self._replayer is None:
                self._start_replayer()  # a forked child (a new gunicorn worker) looks too
        # A daemon thread. Not threading.Thread: its start() waits until the new thread has run,
        # which cost the first logging call up to a few ms on a busy machine.
        _thread.start_new_thread(self._run_sender, (self._sender_done,))

    def _run_sender(self, done: threading.Event) -> None:
        try:
            self._sender.run()
        finally:
            done.set()

    def _warn(self, message: str) -> None:
        try:
            sys.stderr.write('loghog[%s]: %s\n' % (self.app_name, message))
        except (OSError, ValueError, AttributeError):
            pass  # no usable stderr (closed at exit, daemonized): nothing else to tell


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
