"""TLS handshakes in progress: non-blocking steps, a deadline each, the oldest first.

The deployed 0.7 client gives a handshake 1 s before it falls back to
plaintext; slower links need longer (tls_handshake_timeout). Stalled
handshakes cannot hold the pool: each has its deadline, and when every
connection slot is taken the oldest unfinished one makes room.
"""

import logging
import selectors
import ssl
from typing import Dict, List

from loghogd.limits import Connection
from loghogd.listeners import subject_cn, tls_reason
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.wakeup import NEVER

log = logging.getLogger('loghogd')


class HandshakeFailed(Exception):
    """The handshake failed (and was counted and reported); the connection must close."""


class Handshakes:
    """Connections whose handshake is not finished, in the order they were accepted."""

    def __init__(self, timeout: float, counters: Counters, reporter: RateLimitedReporter) -> None:
        self.timeout = timeout
        self.counters = counters
        self.reporter = reporter
        self.pending: Dict[Connection, float] = {}

    def start(self, connection: Connection) -> None:
        self.pending[connection] = connection.opened_at + self.timeout

    def step(self, connection: Connection) -> int:
        """Advance the handshake: the selector events it waits for, or 0 once it is done."""
        sock = connection.sock
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            return selectors.EVENT_READ | selectors.EVENT_WRITE
        except (ssl.SSLError, OSError) as error:
            self.failed(connection.peer, tls_reason(error))
            raise HandshakeFailed() from None
        del self.pending[connection]
        log.debug('TLS connection from %s: %s', connection.peer, subject_cn(sock))
        return 0

    def failed(self, peer: str, reason: str) -> None:
        self.counters.tls_failures += 1
        self.reporter.report('tls', logging.WARNING, 'TLS handshake with %s failed: %s', peer, reason)

    def oldest_to_evict(self) -> Connection:
        """The pool is full: the handshake waiting longest makes room, reported as failed."""
        oldest = next(iter(self.pending))
        self.failed(oldest.peer, 'every connection slot is taken; the oldest unfinished handshake is dropped')
        return oldest

    def late(self, now: float) -> List[Connection]:
        """Handshakes past their deadline, reported as failed."""
        late = []
        for connection, deadline in self.pending.items():
            if deadline > now:
                break
            late.append(connection)
            self.failed(connection.peer, 'no complete handshake within %g s (tls_handshake_timeout)' % self.timeout)
        return late

    def next_deadline(self, now: float) -> float:
        for deadline in self.pending.values():
            return max(0.0, deadline - now)
        return NEVER
