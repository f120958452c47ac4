"""UDP: each datagram is one frame; a batch per readiness event so that a flood cannot starve streams."""

import logging
import socket
from typing import List, Tuple

from loghog.batch import BATCH_CLIENT_FLAGS
from loghog.protocol import Frame, FrameError, decode_datagram
from loghogd.listeners import format_peer
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters

UDP_DATAGRAM_MAX = 65536
UDP_BATCH = 128


def receive_datagrams(sock: socket.socket, max_size: int, counters: Counters,
                      reporter: RateLimitedReporter) -> List[Tuple[Frame, Tuple]]:
    """Up to UDP_BATCH frames waiting on `sock`, each with its sender; bad ones counted and reported."""
    received = []
    for _ in range(UDP_BATCH):
        try:
            data, address = sock.recvfrom(UDP_DATAGRAM_MAX)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as error:
            reporter.report('udp', logging.WARNING, 'UDP receive failed: %s', error)
            break
        counters.bytes_received += len(data)
        try:
            received.append((decode_datagram(data, max_size, BATCH_CLIENT_FLAGS), address))
        except FrameError as error:
            counters.reject(error.reason)
            reporter.report('frame:' + error.reason, logging.WARNING,
                            'dropped a datagram from %s: %s', format_peer(address), error)
    counters.frames_received += len(received)
    return received
