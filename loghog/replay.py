"""Delivering the spool of a process that died, from a thread of the process that found it.

Each spool is sent over its own connection, because an ACK covers the
client_id of the connection's records, and the records keep the dead
process's client_id and seqs, so the server drops what had already arrived.
A chunk is sent, its ACK awaited, then the next: spools are rare and this
keeps the dead process's numbering simple to follow. The spool holds the
records' fields, so they go as batches to a server that takes them
(protocol 1.2), else as version 1 frames, with this handler's secret and
compression and the dead process's app and host name.
"""

import _thread
import os
import threading
import time
from typing import Callable, List, Optional, Tuple

from loghog.batch import CAPS_REQUEST
from loghog.batcher import MAX_BATCH_RECORDS, BatchEncoder, Encoding, Frame, Limits, batch_limits
from loghog.encoder import RecordEncoder
from loghog.fields import Fields, from_spool, version1
from loghog.oversized import OVERSIZED_STRIKES, SAFE_FRAME_BYTES
from loghog.sender import ACK_POLL, CONNECT_TIMEOUT, MAX_BATCH_BYTES, SEND_TIMEOUT, Route
from loghog.servers import Address, Backoff, Failover, format_address
from loghog.spool import Orphan, claim_orphans, read_segment
from loghog.transport import StreamConnection, connect_stream

Entry = Tuple[int, Fields]


class Replayer:
    """Finds the spools of dead processes in `directory` and delivers them, one at a time."""

    def __init__(self, directory: str, own_client_id: str, route: Route, warn: Callable[[str], None],
                 encoding: Encoding) -> None:
        self.directory = directory
        self.encoding = encoding
        self.own_client_id = own_client_id
        self.route = route
        self.warn = warn
        self.done = threading.Event()
        self.stopping = threading.Event()
        self.delivered_total = 0
        self.oversized_total = 0
        self.current: Optional[Orphan] = None  # the spool being sent, locked by this process

    def start(self) -> None:
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            self._deliver_orphans()
        except OSError as error:
            self.warn('cannot look for spools in %s (%s)' % (self.directory, error))
        finally:
            self.done.set()

    def _deliver_orphans(self) -> None:
        for orphan in claim_orphans(self.directory, self.own_client_id):
            self.current = orphan
            try:
                delivered = self._deliver(orphan)
            except Exception as error:
                self.warn('could not deliver the spool %s of a process that ended: %r' % (orphan.client_id, error))
                delivered = False
            self.current = None
            if not delivered:
                orphan.release()
                return
            orphan.finish()

    def forget_in_child(self) -> None:
        """In a forked child: close the inherited lock, so that the spool is not held by the child's life."""
        orphan = self.current
        if orphan is not None:
            orphan.release()

    def _deliver(self, orphan: Orphan) -> bool:
        """Send every record of the orphan's segments until the server acknowledges it; False when stopped."""
        failover = Failover(self.route.failover.addresses, self.route.failover.primary_retry_seconds)
        link = _Link(orphan, self.encoding)
        acknowledged = orphan.acknowledged()
        backoff = Backoff()
        strikes = 0
        try:
            for path in orphan.segments():
                entries = [(seq, fields) for seq, fields in ((seq, from_spool(data))
                                                             for seq, data in read_segment(path, acknowledged))
                           if fields is not None]
                position = 0
                while position < len(entries):
                    if self.stopping.is_set():
                        return False
                    frames: List[Frame] = []
                    try:
                        if link.connection is None:
                            link.connect(failover.current, self.route.tls)
                        frames = link.frames(entries, position)
                        link.connection.send(frames)
                        _wait_for_ack(link.connection, frames[-1][0], self.route.ack_timeout)
                        link.answered()
                    except (OSError, ValueError) as error:
                        link.close()
                        if frames and link.limits is None and len(frames[0][1]) > SAFE_FRAME_BYTES:
                            strikes += 1
                            if strikes >= OVERSIZED_STRIKES:
                                self.oversized_total += 1
                                self.warn('dropped a spooled record of more than %d bytes: %s closed the connection'
                                          ' each time it was sent' % (SAFE_FRAME_BYTES - 8,
                                                                      format_address(failover.current)))
                                position += 1
                                strikes = 0
                            continue
                        self.warn('spool %s: %s (%s); retrying' % (orphan.client_id,
                                                                  format_address(failover.current), error))
                        if failover.next():
                            self.stopping.wait(backoff.next_delay())
                        continue
                    backoff.reset()
                    strikes = 0
                    acknowledged = frames[-1][0]
                    while position < len(entries) and entries[position][0] <= acknowledged:
                        position += 1
                        self.delivered_total += 1
                    orphan.note_acknowledged(acknowledged)
                _unlink(path)
        finally:
            link.close()
        return True


class _Link:
    """One connection of a replay and what its server takes: the first record asks, as the sender's does."""

    def __init__(self, orphan: Orphan, encoding: Encoding) -> None:
        app_id, hostname = orphan.origin() or (encoding.app_id, encoding.hostname)
        self.client_id = orphan.client_id
        self.encoder = RecordEncoder(app_id, hostname, encoding.secret, encoding.compress)
        self.batcher = BatchEncoder(app_id, hostname, encoding.secret, encoding.compress)
        self.connection: Optional[StreamConnection] = None
        self.asking = False
        self.limits: Optional[Limits] = None

    def connect(self, address: Address, tls: object) -> None:
        self.connection = connect_stream(address, CONNECT_TIMEOUT, tls)
        self.connection.set_send_timeout(SEND_TIMEOUT)
        self.asking = True
        self.limits = None

    def frames(self, entries: List[Entry], position: int) -> List[Frame]:
        """The next frames to send: the asking record alone, a run of batches, or version 1 frames."""
        if self.asking:
            seq, fields = entries[position]
            return [(seq, self.encoder.encode(*version1(fields), self.client_id, seq, CAPS_REQUEST))]
        if self.limits is not None:
            return self.batcher.frames(self.client_id, entries[position:position + self.limits.max_records],
                                       self.limits)
        return _chunk([(seq, self.encoder.encode(*version1(fields), self.client_id, seq))
                       for seq, fields in entries[position:position + MAX_BATCH_RECORDS]], 0)

    def answered(self) -> None:
        if self.asking:
            self.asking = False
            self.limits = batch_limits(self.connection.caps)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None


def _chunk(frames: List[Frame], position: int) -> List[Frame]:
    """The frames from `position` up to about MAX_BATCH_BYTES; a frame a server may refuse goes alone."""
    chunk: List[Frame] = []
    size = 0
    for seq, frame in frames[position:]:
        big = len(frame) > SAFE_FRAME_BYTES
        if chunk and (big or size + len(frame) > MAX_BATCH_BYTES):
            break
        chunk.append((seq, frame))
        size += len(frame)
        if big:
            break
    return chunk


def _wait_for_ack(connection: StreamConnection, seq: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while connection.read_acks() < seq:
        if time.monotonic() >= deadline:
            raise ConnectionError('no acknowledgement for %g s' % timeout)
        connection.wait_readable(ACK_POLL)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
