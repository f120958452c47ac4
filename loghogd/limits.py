"""The share of the server each peer address may take, and what happens when it is reached.

Connections (per address, and a pool that plain TCP cannot fill so that TLS
clients always get in), bytes held for unfinished frames (in all and per
address), time to finish a first frame and each started frame, and bytes
inflated from compressed frames per second. Reaching a limit is counted and
reported (rate-limited) with the peer; the server closes what it is told to.
"""

import logging
import socket
from typing import Dict, List, Optional, Sequence, Tuple

from loghog.protocol import FLAG_ZLIB, Frame, FrameError, StreamDecoder
from loghogd.config import ServerConfig
from loghogd.inflating import inflate
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.wakeup import NEVER

MAX_BUCKETS = 65536
RESUME_SLACK = 0.01


class Connection:
    """One client stream: its partial frame, its place in the limits, its acknowledgements.

    On a syslog listener `decoder` is a SyslogFramer, `syslog_kind` says
    which (tcp, tls) and `sender` is the peer's IP, a message's host when
    it names none.
    """

    __slots__ = ('sock', 'peer', 'host', 'decoder', 'tls', 'opened_at', 'buffered', 'held', 'held_bytes',
                 'ack_client', 'ack_sent', 'ack_out', 'ack_caps', 'syslog_kind', 'sender')

    def __init__(self, sock: socket.socket, peer: str, host: str, decoder: StreamDecoder, tls: bool,
                 now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.host = host
        self.decoder = decoder
        self.tls = tls
        self.opened_at = now
        self.buffered = 0
        self.held: List[Frame] = []
        self.held_bytes = 0
        self.ack_client = ''
        self.ack_sent = 0
        self.ack_out = b''
        self.ack_caps = False  # its first ACK also says what the server takes (protocol 1.2)
        self.syslog_kind = ''
        self.sender = ''


class ConnectionLimits:
    """Accounting of every connection; deadlines on a monotonic clock."""

    def __init__(self, config: ServerConfig, counters: Counters, reporter: RateLimitedReporter) -> None:
        self.config = config
        self.counters = counters
        self.reporter = reporter
        self.max_connections = config.max_connections
        self.tls_reserved = 0
        self.open_count = 0
        self.by_host: Dict[str, int] = {}
        self.buffered_by_host: Dict[str, int] = {}
        self.buffered_total = 0
        self.never_framed: Dict[Connection, None] = {}
        self.holding: Dict[Connection, float] = {}
        self.paused: Dict[Connection, float] = {}
        self._buckets: Dict[str, List[float]] = {}

    def fit(self, max_connections: int, tls_listening: bool) -> None:
        """The pool as the descriptor limit allows; the TLS reserve is kept only with a TLS listener."""
        self.max_connections = max_connections
        self.tls_reserved = min(self.config.tls_reserved_connections, max_connections // 2) if tls_listening else 0

    # connections --------------------------------------------------------

    def refusal(self, host: str, tls: bool) -> Optional[str]:
        """Why a new connection from `host` cannot be taken, or None."""
        if self.by_host.get(host, 0) >= self.config.max_connections_per_address:
            return 'max_connections_per_address'
        if self.open_count >= self.max_connections - (0 if tls else self.tls_reserved):
            return 'max_connections'
        return None

    def refuse(self, peer: str, reason: str) -> None:
        self.counters.connections_refused += 1
        if reason == 'max_connections_per_address':
            self.counters.connections_refused_per_address += 1
        self.reporter.report('refused:' + reason, logging.WARNING, 'refused a connection from %s: %d connections '
                             'are open (%s)', peer, self.open_count, reason)

    def opened(self, connection: Connection) -> None:
        self.open_count += 1
        self.by_host[connection.host] = self.by_host.get(connection.host, 0) + 1
        self.never_framed[connection] = None
        self.counters.connections_open = self.open_count

    def closed(self, connection: Connection) -> None:
        self.open_count -= 1
        left = self.by_host[connection.host] - 1
        if left:
            self.by_host[connection.host] = left
        else:
            del self.by_host[connection.host]
        self.never_framed.pop(connection, None)
        self.holding.pop(connection, None)
        self.paused.pop(connection, None)
        self._set_buffered(connection, 0)
        self.counters.connections_open = self.open_count

    # bytes held for unfinished frames -------------------------------------

    def account(self, connection: Connection, now: float, completed_frame: bool) -> List[Connection]:
        """Note what `connection` holds after a read; return the connections to close for it.

        `holding` keeps the connections that hold bytes (an unfinished frame, or
        frames waiting for the inflate budget) in the order they began to.
        """
        holding = connection.decoder.pending_bytes + connection.held_bytes
        if completed_frame:
            self.never_framed.pop(connection, None)
        if not holding:
            self.holding.pop(connection, None)
        elif completed_frame or connection not in self.holding:
            self.holding.pop(connection, None)
            self.holding[connection] = now
        self._set_buffered(connection, holding)
        if self.buffered_by_host.get(connection.host, 0) > self.config.max_buffered_bytes_per_peer:
            self._buffer_full(connection, 'max_buffered_bytes_per_peer')
            return [connection]
        victims = []
        for oldest in list(self.holding):
            if self.buffered_total <= self.config.max_buffered_bytes:
                break
            self._buffer_full(oldest, 'max_buffered_bytes')
            victims.append(oldest)
        return victims

    def _buffer_full(self, connection: Connection, limit: str) -> None:
        self.counters.connections_closed_buffer_full += 1
        self.reporter.report('buffer:' + limit, logging.WARNING,
                             'closing the connection from %s: %d bytes of unfinished frames are buffered '
                             '(%s; %d bytes in all)', connection.peer, self.buffered_by_host.get(connection.host, 0),
                             limit, self.buffered_total)
        self.holding.pop(connection, None)
        self._set_buffered(connection, 0)

    def _set_buffered(self, connection: Connection, size: int) -> None:
        delta = size - connection.buffered
        if not delta:
            return
        connection.buffered = size
        self.buffered_total += delta
        left = self.buffered_by_host.get(connection.host, 0) + delta
        if left:
            self.buffered_by_host[connection.host] = left
        else:
            self.buffered_by_host.pop(connection.host, None)
        self.counters.buffered_bytes = self.buffered_total

    # deadlines ------------------------------------------------------------

    def expired(self, now: float) -> List[Connection]:
        """Connections past idle_timeout without a complete frame, or past frame_timeout in one.

        A connection paused for its inflate budget is not being read: its frame's time does not run out.
        """
        late = []
        idle_since = now - self.config.idle_timeout
        for connection in self.never_framed:
            if connection.opened_at > idle_since:
                break
            late.append(connection)
            self.counters.connections_closed_idle += 1
            self.reporter.report('idle', logging.INFO, 'closing the connection from %s: no complete frame '
                                 'within %g s (idle_timeout)', connection.peer, self.config.idle_timeout)
        started_before = now - self.config.frame_timeout
        for connection, started in self.holding.items():
            if started > started_before:
                break
            if connection not in late and connection not in self.paused:
                late.append(connection)
                self.counters.frames_timed_out += 1
                self.reporter.report('frame_timeout', logging.WARNING, 'closing the connection from %s: a frame '
                                     'was not finished within %g s (frame_timeout)', connection.peer,
                                     self.config.frame_timeout)
        return late

    def next_deadline(self, now: float) -> float:
        """Seconds until expired() or resumable() may have something to say."""
        times = [NEVER]
        for connection in self.never_framed:
            times.append(connection.opened_at + self.config.idle_timeout - now)
            break
        for started in self.holding.values():
            times.append(started + self.config.frame_timeout - now)
            break
        if self.paused:
            times.append(min(self.paused.values()) - now)
        return max(0.0, min(times))

    # inflated bytes -------------------------------------------------------

    def inflate(self, host: str, peer: str, frames: Sequence[Frame], now: float) -> Tuple[List[Frame], List[Frame]]:
        """(frames ready for the processor, compressed ones inflated; frames over the peer's budget).

        Each address may inflate max_inflated_bytes_per_second (with a burst
        of one second's worth); a frame that finds the budget spent waits,
        and one that fails to inflate costs max_message_size.
        """
        ready: List[Frame] = []
        bucket = None
        plain_from = 0  # the frames from here to the next compressed one go to `ready` as they are
        for index, (flags, payload) in enumerate(frames):
            if not flags & FLAG_ZLIB:
                continue
            ready += frames[plain_from:index]
            plain_from = index + 1
            if bucket is None:
                bucket = self._bucket(host, now)
            if bucket[0] <= 0:
                self.counters.inflate_limited += 1
                self.reporter.report('inflate', logging.WARNING, 'slowing down %s: it sent more than %d inflated '
                                     'bytes per second (max_inflated_bytes_per_second)', peer,
                                     self.config.max_inflated_bytes_per_second)
                return ready, list(frames[index:])
            try:
                data = inflate(payload, self.config.max_message_size)
            except FrameError as error:
                bucket[0] -= self.config.max_message_size  # what a failed inflate may have cost: a bomb is no free ride
                self.counters.reject(error.reason)
                self.reporter.report('reject:' + error.reason, logging.WARNING, 'rejected a message from %s (%s): %s',
                                     peer, error.reason, error)
                continue
            bucket[0] -= len(data)
            self.counters.inflated_bytes += len(data)
            ready.append((flags & ~FLAG_ZLIB, data))
        ready += frames[plain_from:]
        return ready, []

    def resume_at(self, host: str, now: float) -> float:
        """When the budget of `host` is positive again."""
        bucket = self._bucket(host, now)
        return now + max(0.0, -bucket[0]) / self.config.max_inflated_bytes_per_second + RESUME_SLACK

    def _bucket(self, host: str, now: float) -> List[float]:
        rate = self.config.max_inflated_bytes_per_second
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full_buckets(now)
            bucket = self._buckets[host] = [float(rate), now]
        else:
            bucket[0] = min(float(rate), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        return bucket

    def _forget_full_buckets(self, now: float) -> None:
        """A bucket refilled to the brim says nothing: drop those (all of them if none is full)."""
        rate = self.config.max_inflated_bytes_per_second
        full = [host for host, (tokens, last) in self._buckets.items() if tokens + (now - last) * rate >= rate]
        for host in full:
            del self._buckets[host]
        if not full:
            self._buckets.clear()
