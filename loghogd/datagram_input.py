"""The UDP listeners' readiness events: each datagram to the processor or to the syslog input.

A datagram needs no connection: one batch is read per event (datagrams.py,
syslog_server.py) and handed on with the pass's clocks, a compressed loghog
frame within its sender's inflate budget. Kept apart from server.py, whose
connections are streams with state.
"""

import time

from loghogd.datagrams import receive_datagrams
from loghogd.limits import ConnectionLimits
from loghogd.listeners import Listener, format_peer, peer_host
from loghogd.processor import Processor
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.syslog_input import SyslogInput
from loghogd.syslog_server import peer_address, receive_syslog_datagrams


class DatagramInput:
    """Reads the UDP listeners: loghog frames to the processor, syslog messages to the syslog input."""

    def __init__(self, max_message_size: int, limits: ConnectionLimits, processor: Processor, syslog: SyslogInput,
                 counters: Counters, reporter: RateLimitedReporter) -> None:
        self.max_message_size = max_message_size
        self.limits = limits
        self.processor = processor
        self.syslog = syslog
        self.counters = counters
        self.reporter = reporter

    def read(self, listener: Listener, now: float, prefix: str, mono: float) -> None:
        """One batch of what waits on `listener`; a frame over its sender's inflate budget is counted and dropped."""
        if listener.syslog:
            for data, address in receive_syslog_datagrams(listener.sock, self.reporter):
                self.syslog.datagram(data, format_peer(address), peer_address(address), now, prefix)
            return
        counters = self.counters
        for frame, address in receive_datagrams(listener.sock, self.max_message_size, counters, self.reporter):
            peer = format_peer(address)
            ready, waiting = self.limits.inflate(peer_host(address), peer, (frame,), mono)
            if waiting:
                counters.reject('inflate_rate')
            elif ready:
                self.processor.process(ready, peer, now, prefix)

    def drain(self, listener: Listener, deadline: float, now: float, prefix: str, mono: float) -> None:
        """At stop: read `listener` until a read brings nothing or `deadline` passes."""
        while time.time() < deadline:
            before = self.counters.bytes_received
            self.read(listener, now, prefix, mono)
            if self.counters.bytes_received == before:
                return
