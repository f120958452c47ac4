"""What the server needs to run syslog listeners: datagrams, their TLS context, the sender's address.

server.py accepts, limits and closes syslog connections like any other and
hands what it reads to SyslogInput (syslog_input.py).
"""

import logging
import socket
import ssl
from typing import Callable, List, Tuple

from loghogd.config import ServerConfig
from loghogd.datagrams import UDP_BATCH, UDP_DATAGRAM_MAX
from loghogd.reporting import RateLimitedReporter


def make_syslog_tls_context(config: ServerConfig,
                            make_tls_context: Callable[[ServerConfig], ssl.SSLContext]) -> ssl.SSLContext:
    """The loghog TLS context, with the client certificate optional when syslog_tls_client_cert says so.

    An optional certificate is still checked against cacert (and the CRL)
    when a sender shows one: a bad certificate fails the handshake.
    """
    context = make_tls_context(config)
    if not config.syslog_tls_client_cert_required:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_address(address: object) -> str:
    """The sender's IP without the port: the host of a message that names none."""
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


def receive_syslog_datagrams(sock: socket.socket, reporter: RateLimitedReporter) -> List[Tuple[bytes, Tuple]]:
    """Up to UDP_BATCH datagrams waiting on `sock`, each with its sender: a flood cannot starve the streams."""
    received = []
    for _ in range(UDP_BATCH):
        try:
            received.append(sock.recvfrom(UDP_DATAGRAM_MAX))
        except (BlockingIOError, InterruptedError):
            break
        except OSError as error:
            reporter.report('syslog-udp', logging.WARNING, 'syslog UDP receive failed: %s', error)
            break
    return received
