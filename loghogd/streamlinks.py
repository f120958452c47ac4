"""The optional JetStream links of one loghogd: forwarding, consuming, or both.

The service calls `start` once the loop is about to run, `pump` between
loop passes, `stop` after the clients are drained, and `counters` for the
stats. Nothing here imports nats-py unless loghogd.conf has [forward] or
[consume].
"""

import socket
from typing import Dict, Optional

from loghogd.config import Config, ConfigError
from loghogd.facilities import Facilities
from loghogd.processor import Processor


def check_facilities(config: Config, facilities: Facilities) -> None:
    """A facility that forwards needs a [forward] section to forward through."""
    if config.forward is None:
        for facility in facilities:
            if facility.forward:
                raise ConfigError('%s: facility %s has forward = yes, but %s has no [forward] section'
                                  % (config.main.facilities_config, facility.name, config.path))


class StreamLinks:
    """The forwarder and the consumer this config asks for (each possibly None)."""

    def __init__(self, config: Config, processor: Processor) -> None:
        self.config = config
        self.processor = processor
        self.forwarder = None
        self.consumer = None
        if config.forward is not None or config.consume is not None:
            from loghogd.natslink import import_nats
            import_nats()

    def start(self, wakeup: Optional[socket.socket]) -> None:
        if self.config.forward is None and self.config.consume is None:
            return
        from loghogd.natslink import socket_waker
        wake = socket_waker(wakeup) if wakeup is not None else (lambda: None)
        if self.config.forward is not None:
            from loghogd.forward import Forwarder
            self.forwarder = Forwarder(self.config.forward, self.config.main.workdir, wake)
            self.forwarder.acks = self.processor.acks
            self.processor.forwarder = self.forwarder
            self.forwarder.start()
        if self.config.consume is not None:
            from loghogd.consume import Consumer
            self.consumer = Consumer(self.config.consume, self.processor, wake)
            self.consumer.start()

    def pump(self, now: float) -> bool:
        """Results in, work out; True when the loop should run its next pass at once."""
        busy = False
        if self.forwarder is not None:
            busy = self.forwarder.pump(now)
        if self.consumer is not None:
            busy = self.consumer.pump(now) or busy
        return busy

    def stop(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
        if self.consumer is not None:
            self.consumer.stop()

    def counters(self) -> Dict[str, int]:
        found: Dict[str, int] = {}
        for link in (self.forwarder, self.consumer):
            if link is not None:
                found.update(link.counters())
        return found
