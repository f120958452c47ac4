"""Writing from the stream: a durable pull consumer feeds records to the writer.

Each JetStream message is a Record (streamrecord.py). It is routed and
written like a record from a listener, noted in the acknowledgement
journal under the consumer (`stream:<consumer>`, by stream sequence), and
acknowledged to JetStream only once the journal says its line is on disk.
A message JetStream delivers again after a crash of this writer is
either not in the journal (written now) or is (dropped as a duplicate and
acknowledged), so the writer's crash loses and duplicates nothing.

Redeliveries come out of order: when a writer binds its consumer, the
stream sequences JetStream delivered to an earlier run and has not had
acknowledged are marked in the journal as not handled yet
(`expect_redelivery`), so that newer records written first do not make
them look handled.

Acknowledgements are explicit, one per message: ack policy `all` would
also acknowledge redeliveries of an earlier run not yet delivered again.

With several `subjects` filters there is one consumer per filter,
`<durable>-<n>`, because nats-server 2.9 allows one filter per consumer.
"""

import asyncio
import collections
import logging
from typing import Any, Deque, Dict, List, Tuple

from loghogd.natslink import NatsLink
from loghogd.processor import Processor, ReceiveClock
from loghogd.streamconfig import ConsumeConfig
from loghogd.streamrecord import BadStreamRecord, decode_record

log = logging.getLogger('loghogd')

FETCH_BATCH = 512
MAX_UNACKED = 1024
ACK_WAIT = 10.0
JOURNAL_PREFIX = 'stream:'
"""Client ids of consumers in the journal; ':' is never in a client's own id."""


def consumer_names(config: ConsumeConfig) -> List[Tuple[str, str]]:
    """(consumer name, filter or '') for each consumer this writer reads through."""
    if len(config.subjects) <= 1:
        return [(config.durable, config.subjects[0] if config.subjects else '')]
    return [('%s-%d' % (config.durable, index), subject) for index, subject in enumerate(config.subjects, 1)]


class Consumer:
    """The loop's side: write what the link fetched, acknowledge what the journal has."""

    def __init__(self, config: ConsumeConfig, processor: Processor, wake: Any) -> None:
        self.processor = processor
        self.link = NatsLink(config.connection, 'consume', wake)
        self.fetcher = Fetcher(self.link, config)
        self.clock = ReceiveClock()
        self.unacked: Dict[str, Deque[Tuple[int, Any]]] = collections.defaultdict(collections.deque)
        self.received = 0
        self.acked = 0
        self.redelivered = 0
        self.duplicates = 0

    def start(self) -> None:
        self.link.start()
        self.link.call(lambda: self.link.spawn(self.fetcher.run()))

    def pump(self, now: float) -> bool:
        """Acknowledge what is on disk, then queue what arrived; True when lines wait to be written."""
        self._acknowledge()
        events = self.link.take_events()
        queued = False
        acks = self.processor.acks
        while events:
            kind, name, messages = events.popleft()
            client_id = JOURNAL_PREFIX + name
            if kind == 'bound':
                acks.expect_redelivery(client_id, *messages)
                continue
            waiting = self.unacked[name]
            for seq, delivered, data, message in messages:
                self.received += 1
                if delivered > 1:
                    self.redelivered += 1
                waiting.append((seq, message))
                if acks.is_duplicate(client_id, seq):
                    self.duplicates += 1
                    continue
                try:
                    record = decode_record(data)
                except BadStreamRecord as error:
                    self.processor.note_unreadable('bad_stream_record', str(error), 'stream ' + name, client_id, seq)
                    continue
                self.processor.process_stream_record(record, self.clock.prefix(record.received), now, client_id, seq)
                queued = True
        return queued

    def _acknowledge(self) -> None:
        acks = self.processor.acks
        done = []
        for name, waiting in self.unacked.items():
            highest = acks.seq_to_ack(JOURNAL_PREFIX + name)
            while waiting and waiting[0][0] <= highest:
                done.append(waiting.popleft()[1])
        if done:
            self.acked += len(done)
            self.link.call(self.fetcher.ack_all, done)

    def stop(self) -> None:
        self._acknowledge()
        self.link.stop(self.fetcher.flush)

    def counters(self) -> Dict[str, int]:
        return {
            'consume_received': self.received,
            'consume_acked': self.acked,
            'consume_redelivered': self.redelivered,
            'consume_duplicates': self.duplicates,
            'consume_pending': sum(len(waiting) for waiting in self.unacked.values()),
        }


class Fetcher:
    """The link thread's side: bind the consumers, fetch in batches, send the acks."""

    def __init__(self, link: NatsLink, config: ConsumeConfig) -> None:
        self.link = link
        self.config = config
        self.outstanding = 0
        self.acks_in_flight: set = set()

    async def run(self) -> None:
        for name, subject in consumer_names(self.config):
            subscription = await self._bind(name, subject)
            self.link.spawn(self._fetch(name, subscription))

    async def _bind(self, name: str, subject: str) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig
        config = ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT,
                                max_ack_pending=MAX_UNACKED, filter_subject=subject or None)
        while True:
            while self.link.js is None:
                await asyncio.sleep(0.05)
            try:
                info = await self.link.js.add_consumer(self.config.connection.stream, config)
                subscription = await self.link.js.pull_subscribe_bind(durable=name,
                                                                      stream=self.config.connection.stream)
            except Exception as error:  # no stream yet, no leader yet: retried
                self.link.reporter.report('bind', logging.WARNING, 'consume: cannot bind consumer %s: %s; retrying',
                                          name, error or type(error).__name__)
                await asyncio.sleep(1.0)
                continue
            self.link.post(('bound', name, (info.ack_floor.stream_seq + 1, info.delivered.stream_seq)))
            return subscription

    async def _fetch(self, name: str, subscription: Any) -> None:
        timeout_error = self.link.nats.errors.TimeoutError
        while True:
            if self.outstanding >= MAX_UNACKED:
                await asyncio.sleep(0.02)
                continue
            try:
                messages = await subscription.fetch(min(FETCH_BATCH, MAX_UNACKED - self.outstanding), timeout=1.0)
            except (timeout_error, asyncio.TimeoutError):
                continue
            except Exception as error:  # disconnected, leader change: retried
                self.link.reporter.report('fetch', logging.WARNING, 'consume: fetching from consumer %s: %s; '
                                          'retrying', name, error or type(error).__name__)
                await asyncio.sleep(0.5)
                continue
            self.outstanding += len(messages)
            self.link.post(('messages', name, [(message.metadata.sequence.stream, message.metadata.num_delivered,
                                                message.data, message) for message in messages]))

    def ack_all(self, messages: List[Any]) -> None:
        """Acknowledge each message (one task for the lot)."""
        self.outstanding -= len(messages)
        task = self.link.spawn(self._ack(messages))
        self.acks_in_flight.add(task)
        task.add_done_callback(self.acks_in_flight.discard)

    @staticmethod
    async def _ack(messages: List[Any]) -> None:
        for message in messages:
            try:
                await message.ack()
            except Exception as error:  # lost with the connection: JetStream delivers it again, the journal drops it
                log.debug('consume: an acknowledgement was lost: %s', error)

    async def flush(self) -> None:
        """At stop: the acknowledgements already sent reach the server."""
        while self.acks_in_flight:
            await asyncio.wait(list(self.acks_in_flight))
        if self.link.client is not None:
            await self.link.client.flush()

