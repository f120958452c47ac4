"""Acknowledgements out: the ACK frames owed to acknowledged-delivery clients.

A connection whose frame asked for capabilities (protocol 1.2) before any
ACK was sent on it gets its first ACK with the server's capabilities; every
other ACK is the plain 1.1 frame, so a 1.1 client never sees anything new.
"""

import ssl
from typing import Any, Dict

from loghog.batch import encode_caps_ack
from loghog.protocol import encode_ack
from loghogd.acks import AckJournal
from loghogd.limits import Connection
from loghogd.stats import Counters


class AckSender:
    """At most one ACK frame per connection per pass; a client not reading gets it later."""

    def __init__(self, counters: Counters, capabilities: Dict[str, Any]) -> None:
        self.counters = counters
        self.capabilities = capabilities
        self.owed: Dict[Connection, None] = {}

    def owe(self, targets: Dict[Connection, str], asking: Dict[Connection, None]) -> None:
        """Each connection in `targets` is owed an ACK for its client id's records;
        those in `asking` that have had no ACK yet, one with the capabilities."""
        for connection, client_id in targets.items():
            connection.ack_client = client_id
            self.owed[connection] = None
            if connection in asking and not connection.ack_sent and not connection.ack_out:
                connection.ack_caps = True

    def forget(self, connection: Connection) -> None:
        self.owed.pop(connection, None)

    def send(self, acks: AckJournal) -> None:
        """Send what each owed connection can take now, never blocking."""
        seq_to_ack = acks.seq_to_ack
        owed = self.owed
        for connection in list(owed):
            if not connection.ack_out:
                seq = seq_to_ack(connection.ack_client, connection)
                if seq <= connection.ack_sent:
                    if not acks.waiting_for_disk(connection.ack_client):
                        del owed[connection]
                    continue
                if connection.ack_caps:
                    connection.ack_out = encode_caps_ack(seq, self.capabilities)
                    connection.ack_caps = False
                else:
                    connection.ack_out = encode_ack(seq)
                connection.ack_sent = seq
            try:
                sent = connection.sock.send(connection.ack_out)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                continue
            except OSError:
                del owed[connection]
                continue
            connection.ack_out = connection.ack_out[sent:]
            if not connection.ack_out:
                self.counters.acks_sent += 1
                if seq_to_ack(connection.ack_client, connection) <= connection.ack_sent and \
                        not acks.waiting_for_disk(connection.ack_client):
                    del owed[connection]
