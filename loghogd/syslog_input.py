"""Syslog bytes from a listener to the processor: frame, parse, count, report.

The server owns the sockets and calls in with what it read; this module
knows nothing of sockets. Every message ends counted exactly once: written
(accepted), or rejected under a reason (`bad_syslog`, `unknown_app`,
`unsigned`, `truncated` for an octet-counted message cut off by the close).
A message over max_message_size is cut to it, written, and counted as
truncated by listener kind.
"""

import logging
from operator import itemgetter
from typing import List

from loghogd.processor import Processor
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.syslog_framer import Message, SyslogFramer
from loghogd.syslog_parser import parse_runs

LISTENER_KINDS = ('udp', 'tcp', 'tls')


class SyslogInput:
    """Turns what syslog peers sent into records for the processor."""

    def __init__(self, processor: Processor, counters: Counters, reporter: RateLimitedReporter,
                 max_message_size: int) -> None:
        self.processor = processor
        self.counters = counters
        self.reporter = reporter
        self.max_message_size = max_message_size

    def new_framer(self) -> SyslogFramer:
        """The framer for one new stream connection."""
        return SyslogFramer(self.max_message_size)

    def datagram(self, data: bytes, peer: str, peer_host: str, now: float, prefix: str) -> None:
        """One UDP datagram is one message."""
        self.counters.bytes_received += len(data)
        message = (data[:self.max_message_size], len(data) > self.max_message_size)
        self._process([message], 'udp', peer, peer_host, now, prefix)

    def stream_data(self, framer: SyslogFramer, data: bytes, kind: str, peer: str, peer_host: str,
                    now: float, prefix: str) -> int:
        """Bytes read from a TCP or TLS connection; the messages they complete are processed and counted."""
        self.counters.bytes_received += len(data)
        messages = framer.feed(data)
        if messages:
            self._process(messages, kind, peer, peer_host, now, prefix)
        return len(messages)

    def stream_end(self, framer: SyslogFramer, kind: str, peer: str, peer_host: str, now: float,
                   prefix: str) -> None:
        """The peer closed: a last message without LF is processed, a cut-off counted one counted."""
        messages, cut_off = framer.finish()
        if messages:
            self._process(messages, kind, peer, peer_host, now, prefix)
        if cut_off:
            self.counters.reject('truncated')
            self.reporter.report('syslog-cut-off', logging.WARNING, 'syslog connection from %s closed in the '
                                 'middle of an octet-counted message (%d bytes dropped)', peer, cut_off)

    def _process(self, messages: List[Message], kind: str, peer: str, peer_host: str, now: float,
                 prefix: str) -> None:
        self.counters.syslog_messages_by_listener[kind] += len(messages)
        cut = sum(map(itemgetter(1), messages))
        if cut:
            self.counters.syslog_truncated_by_listener[kind] += cut
        for _ in range(cut):
            self.reporter.report('syslog-truncated', logging.WARNING, 'cut a syslog message from %s to '
                                 'max_message_size (%d bytes) and wrote it', peer, self.max_message_size)
        runs, errors = parse_runs(list(map(itemgetter(0), messages)), now, peer_host)
        for error in errors:
            self.counters.reject(error.reason)
            self.reporter.report('reject:' + error.reason, logging.WARNING,
                                 'rejected a message from %s (%s): %s', peer, error.reason, error)
        self.processor.process_records(runs, peer, now, prefix)
