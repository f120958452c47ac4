"""Forwarding to JetStream: facilities with `forward = yes` publish their records.

The loop queues each record on disk (forwardqueue.py) and holds its
client's acknowledgement; the link's thread publishes up to WINDOW records
at once with their message id (Nats-Msg-Id), retrying each until JetStream
acknowledges it; only then does the loop drop it from the queue and let
the client's ACK move past it. A client's exactly-once delivery so holds
through the edge's crash: what the edge had not had acknowledged is resent
by the client or replayed from the queue, and JetStream drops the copies.
"""

import asyncio
import itertools
import json
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from loghogd.acks import AckJournal
from loghogd.facilities import Facility
from loghogd.forwardqueue import Entry, ForwardQueue
from loghogd.natslink import NatsLink
from loghogd.record import Record
from loghogd.reporting import RateLimitedReporter
from loghogd.streamconfig import ForwardConfig
from loghogd.streamrecord import encode_record, message_id, subject

log = logging.getLogger('loghogd')

WINDOW = 1024
PUBLISH_TIMEOUT = 5.0
RECOVER_CHECK = 0.1
"""Seconds the publisher waits for new records before it retries failed ones anyway."""
SAVE_INTERVAL = 0.5


def acknowledged_identity(identity: str) -> Optional[Tuple[str, int]]:
    """(client_id, seq) of an acknowledged record's message id; None for the others."""
    client_id, _dash, seq = identity.rpartition('-')
    return (client_id, int(seq)) if client_id and seq.isdigit() else None


class Forwarder:
    """The loop's side: queue, publish window, acknowledgements; counted."""

    def __init__(self, config: ForwardConfig, workdir: str, wake: Any) -> None:
        self.config = config
        self.queue = ForwardQueue(workdir, config.max_queue_bytes)
        self.link = NatsLink(config.connection, 'forward', wake)
        self.publisher = Publisher(self.link, config.connection.stream)
        self.acks: Optional[AckJournal] = None
        self.in_flight = 0
        self.published = 0
        self.acked = 0
        self.duplicates = 0
        self.unreadable = 0
        self._saved_at = 0.0
        self.reporter = RateLimitedReporter(burst=1)

    def start(self) -> None:
        """Hold what an earlier run queued and JetStream has not acknowledged, then connect.

        A client resending such a record after a crash of this edge finds it
        handled in the journal; its acknowledgement still waits for JetStream.
        """
        if self.acks is not None:
            for identity in self.queue.pending_ids():
                acked = acknowledged_identity(identity)
                if acked is not None:
                    self.acks.hold(*acked)
            self.acks.refresh_caps()
        self.link.start()

    def offer(self, record: Record, facility: Facility) -> bool:
        """Queue `record` for the stream; False when the queue is full or unwritable (the caller rejects it)."""
        if not self.queue.append(message_id(record), subject(self.config.subject_prefix, facility),
                                 encode_record(record)):
            return False
        if record.client_id is not None and self.acks is not None:
            self.acks.hold(record.client_id, record.seq)
        return True

    def flush(self) -> int:
        """Put what `offer` queued on disk, before the journal says it was handled; how many the disk refused.

        Refused records are rejected: their clients' acknowledgements go on
        as for any rejected record.
        """
        refused = self.queue.flush()
        if not refused:
            return 0
        error = self.queue.refused
        self.reporter.report('forward-queue', logging.ERROR, 'forward: cannot write %s: %s; rejected %d records',
                             self.queue.path, error.strerror or error, len(refused))
        for line in refused:
            acked = acknowledged_identity(line.split(b'\t', 1)[0].decode('ascii', 'replace'))
            if self.acks is not None and acked is not None:
                self.acks.release(*acked)
        return len(refused)

    def pump(self, now: float) -> bool:
        """Take the link's results, hand it more; True when a client's ACK may move on."""
        released = self._take_results()
        if self.queue.waiting and self.in_flight < WINDOW:
            entries = self.queue.take(WINDOW - self.in_flight)
            if entries:
                self.in_flight += len(entries)
                self.published += len(entries)
                self.link.call(self.publisher.publish_all, entries)
        if now - self._saved_at >= SAVE_INTERVAL:
            self.queue.save()
            self._saved_at = now
        return released

    def _take_results(self) -> bool:
        events = self.link.take_events()
        released = False
        acks = self.acks
        while events:
            kind, end, identity = events.popleft()
            self.in_flight -= 1
            self.queue.done(end)
            if kind == 'duplicate':
                self.duplicates += 1
            elif kind == 'unreadable':
                self.unreadable += 1
                continue
            self.acked += 1
            acked = acknowledged_identity(identity)
            if acks is not None and acked is not None:
                released = acks.release(*acked) or released
        if released:
            acks.refresh_caps()
        return released

    def stop(self) -> None:
        self.flush()
        self.link.stop(self.publisher.drain)
        self._take_results()
        self.queue.close()

    def counters(self) -> Dict[str, int]:
        return {
            'forward_published': self.published,
            'forward_acked': self.acked,
            'forward_duplicates': self.duplicates,
            'forward_in_flight': self.in_flight,
            'forward_pending_bytes': self.queue.pending_bytes,
            'forward_unreadable': self.unreadable,
        }


class Publisher:
    """The link thread's side: publish in the order given, each record until JetStream has it.

    Records go out as plain NATS publications whose reply subject is one
    inbox of ours (`<inbox>.<token>`), where JetStream's acknowledgements
    arrive: nats-py's request per publication costs about thirty times as
    much CPU. Up to WINDOW are in flight. When one fails (an error reply, no
    reply within PUBLISH_TIMEOUT: the stream is unreachable or a leader
    changes), no new one starts: once the flight has landed or timed out,
    the failed ones are retried one at a time in their order, so records
    stored after an outage keep the order in which they came.
    """

    def __init__(self, link: NatsLink, stream: str) -> None:
        self.link = link
        self.stream = stream
        self.entries: Optional[asyncio.Queue] = None
        self.inbox: Optional[str] = None
        self.sent: Dict[str, Tuple[float, int, bytes, str]] = {}
        self.failed: List[Entry] = []
        self._tokens = itertools.count()

    def publish_all(self, entries: List[Entry]) -> None:
        if self.entries is None:
            self.entries = asyncio.Queue()
            self.link.spawn(self._work())
        for entry in entries:
            self.entries.put_nowait(entry)

    async def drain(self) -> None:
        while self.sent or self.failed or (self.entries is not None and not self.entries.empty()):
            await asyncio.sleep(0.01)
            self._expire()

    async def _work(self) -> None:
        while True:
            if self.failed:
                await self._recover()
            try:
                end, line = await asyncio.wait_for(self.entries.get(), RECOVER_CHECK)
            except asyncio.TimeoutError:
                self._expire()
                continue
            while self.link.js is None:
                await asyncio.sleep(0.05)
            if self.inbox is None:
                self.inbox = self.link.client.new_inbox()
                await self.link.client.subscribe(self.inbox + '.*', cb=self._on_reply)
            self._expire()
            if self.failed:
                await self._recover()
            await self._send(end, line)

    async def _send(self, end: int, line: bytes) -> None:
        parts = line.split(b'\t', 2)
        if len(parts) != 3:
            log.error('forward queue: skipped an unreadable entry ending at offset %d', end)
            self.link.post(('unreadable', end, ''))
            return
        identity = parts[0].decode('ascii', 'replace')
        token = str(next(self._tokens))
        self.sent[token] = (time.monotonic() + PUBLISH_TIMEOUT, end, line, identity)
        try:
            await self.link.client.publish(parts[1].decode('ascii', 'replace'), parts[2],
                                           reply='%s.%s' % (self.inbox, token), headers={'Nats-Msg-Id': identity})
        except Exception as error:  # the client's buffer is full while it reconnects
            del self.sent[token]
            self._fail(end, line, error)

    async def _on_reply(self, message: Any) -> None:
        sent = self.sent.pop(message.subject.rpartition('.')[2], None)
        if sent is None:
            return  # timed out already: retried, and JetStream drops the copy
        _deadline, end, line, identity = sent
        try:
            reply = json.loads(message.data)
        except ValueError:
            reply = {}
        if type(reply) is not dict or 'seq' not in reply or reply.get('stream') != self.stream:
            detail = reply.get('error') if type(reply) is dict else None
            self._fail(end, line, detail or message.headers or 'no acknowledgement')
            return
        self.link.post(('duplicate' if reply.get('duplicate') else 'acked', end, identity))

    def _expire(self) -> None:
        """Publications without a reply in time have failed (the oldest come first in `sent`)."""
        now = time.monotonic()
        for token, (deadline, end, line, _identity) in list(itertools.islice(self.sent.items(), WINDOW)):
            if deadline > now:
                return
            del self.sent[token]
            self._fail(end, line, 'no reply in %g s' % PUBLISH_TIMEOUT)

    def _fail(self, end: int, line: bytes, error: Any) -> None:
        self.failed.append((end, line))
        self.link.reporter.report('publish', logging.WARNING, 'forward: JetStream did not take a record (%s); '
                                  'retrying, records wait in the queue', error)

    async def _recover(self) -> None:
        """Let the flight land or time out, then retry what failed in order until each is taken."""
        while self.sent:
            await asyncio.sleep(0.05)
            self._expire()
        failed, self.failed = sorted(self.failed), []
        for end, line in failed:
            delay = 0.1
            while not await self._request(end, line):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _request(self, end: int, line: bytes) -> bool:
        """One publication that waits for its acknowledgement; True when JetStream has the record."""
        identity, subject_name, payload = line.split(b'\t', 2)
        try:
            ack = await self.link.js.publish(subject_name.decode('ascii', 'replace'), payload, timeout=PUBLISH_TIMEOUT,
                                             stream=self.stream, headers={'Nats-Msg-Id': identity.decode('ascii')})
        except Exception as error:  # timeouts, no responders, reconnects: all retried
            self.link.reporter.report('publish', logging.WARNING, 'forward: JetStream did not take a record (%s); '
                                      'retrying, records wait in the queue', error or type(error).__name__)
            return False
        self.link.post(('duplicate' if ack.duplicate else 'acked', end, identity.decode('ascii')))
        return True
