"""Protocol 1.2 batch frames to queued lines (docs/protocol-1.2.md).

A batch holds records of one app from one host, so the work a version 1
frame does per record is done here once per batch: one decode (msgspec where
it is installed, see loghogd.batchdecode), one route per module, one MAC
check per secret. Lines are queued in the batch's order; a classic line is
the same as the version 1 line of the same record (its text is the body,
exception and stack joined, loghog.batch.record_text), and the other formats
get every structured field (loghogd.record.Record). Each record goes through the checks a
version 1 record does, in the same order, and is counted once: accepted,
rejected under a reason, or dropped as a duplicate. A batch that cannot be
decoded at all counts as one rejection, since its records cannot be counted.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

from loghog.batch import CAPS_FIELD, CAPS_REQUEST, MAX_RECORDS, Batch, mac_matches, record_text, split_mac
from loghog.protocol import FLAG_ACK_REQUEST, FLAG_ZLIB, FrameError
from loghogd.ackmarks import CLIENT_ID, client_owner
from loghogd.batchdecode import decode
from loghogd.formats import escape_controls, json_may_hold_controls
from loghogd.inflating import inflate
from loghogd.record import Record

Route = tuple
"""The processor's (facility, log file, host text, facility name, renderer or None for classic) of a record."""


class Refusal(NamedTuple):
    """Why records are not written: the counter's reason, what to report, the app to count it under."""

    reason: str
    detail: str
    app_id: Optional[str] = None


class BatchIntake:
    """The processor's path for FLAG_BATCH frames."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def capabilities(self) -> Dict[str, int]:
        """What the first ACK of a connection that asked with `caps` tells the client."""
        return {'batch': 1, 'max_message_size': self.processor.max_message_size, 'max_batch_records': MAX_RECORDS}

    def process(self, flags: int, payload: bytes, peer: str, now: float, prefix: str, ack_target: object) -> None:
        """Queue a line for each good record of one batch frame; count every record once."""
        processor = self.processor
        processor.counters.batches_received += 1
        try:
            if flags & FLAG_ZLIB:
                payload = inflate(payload, processor.max_message_size)
            data, received_mac = split_mac(payload, flags)
            batch, bad = decode(data)
        except FrameError as error:
            processor._reject(error.reason, str(error), peer)
            return
        acked = None
        if flags & FLAG_ACK_REQUEST and ack_target is not None and processor.acks is not None:
            acked = _Acked(processor.acks, ack_target, None)
        if acked is not None:
            if batch.client_id is None or not CLIENT_ID.match(batch.client_id):
                self._reject_all(batch, None, Refusal('bad_ack_fields', 'batch asks for an ACK without a valid '
                                                      'client_id'), peer)
                return
            acked = acked._replace(client_id=batch.client_id)
            processor.ack_targets[ack_target] = batch.client_id
        routes, refusal = self._routes(batch, data, received_mac)
        if refusal is not None:
            self._reject_all(batch, acked, refusal, peer)
            return
        plain = not json_may_hold_controls(data)
        signed = received_mac is not None
        if not bad and len(routes) == 1 and self._queue_classic(batch, routes, acked, signed, plain, peer, now,
                                                                prefix):
            return
        self._queue(batch, routes, dict(bad), acked, signed, plain, peer, now, prefix)

    def _routes(self, batch: Batch, data: bytes, received_mac: Optional[bytes]
                ) -> Tuple[Dict[str, Union[Route, Refusal]], Optional[Refusal]]:
        """The route of each module in the batch, and a refusal of the whole batch when a MAC is wrong."""
        processor = self.processor
        app_id, hostname = batch.app_id, batch.hostname
        routes: Dict[str, Union[Route, Refusal]] = {}
        checked: Dict[object, bool] = {}
        for module in dict.fromkeys([record.module for record in batch.records if record is not None]):
            route = processor.route(app_id, module, hostname)
            if type(route) is not tuple:
                routes[module] = Refusal(route.reason, str(route), route.app_id)
                continue
            routes[module] = route
            facility = route[0]
            secret = facility.secret
            if secret is None:
                continue
            matches = checked.get(secret)
            if matches is None:
                matches = checked[secret] = mac_matches(secret, data, received_mac)
            if not matches:
                what = 'a wrong' if received_mac is not None else 'no'
                return routes, Refusal('bad_signature', 'batch for %s carries %s MAC' % (facility.name, what),
                                       facility.app_id)
        return routes, None

    def _queue_classic(self, batch: Batch, routes: Dict[str, Union[Route, Refusal]], acked: Optional['_Acked'],
                       signed: bool, plain: bool, peer: str, now: float, prefix: str) -> bool:
        """The common batch, all lines for one file in the classic format, in one list, and with acks
        noted as one run of seqs; False if it is not."""
        [route] = routes.values()
        if (type(route) is Refusal or route[4] is not None or (signed and route[0].secret is None)
                or route[0].forward or route[1] is None or route[0].rate_limit is not None
                or self.processor.peer_rate_limit is not None):
            return False
        facility, logfile, host_text, name, _render = route
        first = batch.first_seq
        if acked is not None:
            owner = client_owner(batch.app_id, facility.secret)
            if type(first) is not int or first < 1 or not acked.journal.takes_fresh_run(acked.client_id, first,
                                                                                         owner):
                return False
        records = batch.records
        if plain:
            texts = [record.body if record.exception is None and record.stack is None
                     else record_text(record.body, record.exception, record.stack) for record in records]
        else:
            texts = [escape_controls(record_text(record.body, record.exception, record.stack)) for record in records]
        processor = self.processor
        processor.writer.queue_lines(logfile, prefix + host_text, texts, now)
        processor.counters.accepted_by_facility[name] += len(texts)
        if acked is not None:
            evicted = acked.journal.note(acked.client_id, first, logfile, owner, first + len(texts) - 1)
            if evicted:
                processor._evicted(peer, evicted)
            processor.writer.write_this_pass(logfile)
        return True

    def _queue(self, batch: Batch, routes: Dict[str, Union[Route, Refusal]], bad: Dict[int, str],
               acked: Optional['_Acked'], signed: bool, plain: bool, peer: str, now: float, prefix: str) -> None:
        processor = self.processor
        counters = processor.counters
        accepted = counters.accepted_by_facility
        writer = processor.writer
        first_seq = batch.first_seq or 0
        owners: Dict[str, str] = {}
        peer_key = processor._peer_key(peer)
        for index, record in enumerate(batch.records):
            if record is None:
                refusal = Refusal('bad_record', 'batch record %d: %s' % (index, bad[index]))
            else:
                route = routes[record.module]
                refusal = route if type(route) is Refusal else None
            if refusal is None:
                facility, logfile, host_text, name, render = route
                if signed and facility.secret is None:
                    processor._note_unused_signature(facility, peer)
                if acked is not None:
                    seq = first_seq + index
                    owner = owners.get(name)
                    if owner is None:
                        owner = owners[name] = client_owner(batch.app_id, facility.secret)
                    if not acked.journal.may_use(acked.client_id, owner):
                        refusal = Refusal('client_id_taken', 'client id %s belongs to another application or '
                                          'secret' % acked.client_id, batch.app_id)
                    elif acked.journal.is_duplicate(acked.client_id, seq):
                        counters.duplicates_dropped += 1
                        continue
                if refusal is None and processor._over_rate(facility, logfile, peer_key, now):
                    if acked is not None:
                        processor._hold_for_resend(acked.target, peer, facility)
                        break  # this record and the rest stay unacknowledged: the client resends them
                    refusal = Refusal('rate_limited', 'over the rate limit of %s' % facility.name, batch.app_id)
            if refusal is not None:
                processor._reject(refusal.reason, refusal.detail, peer, refusal.app_id)
                if acked is not None:
                    acked.journal.note_rejected(acked.target, acked.client_id, first_seq + index)
                continue
            if facility.forward and not processor.forwarder.offer(
                    batch_record(batch, record, now, peer, acked, first_seq + index), facility):
                processor._reject('forward_queue_full', 'the forward queue is full', peer, batch.app_id)
                if acked is not None:
                    acked.journal.note_rejected(acked.target, acked.client_id, seq)
                continue
            if logfile is not None:
                if render is not None:
                    line = render(batch_record(batch, record, now, peer, acked, first_seq + index))
                elif plain and record.exception is None and record.stack is None:
                    line = prefix + host_text + record.body + '\n'
                else:
                    line = prefix + host_text + escape_controls(
                        record_text(record.body, record.exception, record.stack)) + '\n'
                writer.queue(logfile, line, now)
            accepted[name] += 1
            if acked is not None:
                evicted = acked.journal.note(acked.client_id, seq, logfile, owner)
                if evicted:
                    processor._evicted(peer, evicted)
                if logfile is not None:
                    writer.write_this_pass(logfile)

    def _reject_all(self, batch: Batch, acked: Optional['_Acked'], refusal: Refusal, peer: str) -> None:
        """Count every record of the batch under the refusal's reason (reported once); with acks, each is handled."""
        count = len(batch.records)
        self.processor._reject(refusal.reason, '%s (%d records)' % (refusal.detail, count), peer, refusal.app_id,
                               max(count, 1))
        if acked is not None and count:
            acked.journal.note_rejected(acked.target, acked.client_id, batch.first_seq + count - 1)


def batch_record(batch: Batch, record: Any, now: float, peer: str, acked: Optional['_Acked'], seq: int) -> Record:
    """A batch record with every field it carries, for the formats other than classic."""
    return Record(batch.app_id, record.module, batch.hostname, record.body, now, sent=record.time_us / 1e6,
                  level=record.levelname, levelno=record.levelno, exception=record.exception, stack=record.stack,
                  pid=record.pid, thread=record.thread, extra=record.extra, peer=peer,
                  client_id=acked.client_id if acked is not None else None, seq=seq if acked is not None else None)


class _Acked(NamedTuple):
    """Where an acknowledged batch's records are noted: the journal, the connection, the client id."""

    journal: Any
    target: object
    client_id: Optional[str]


def asks_for_caps(message: Dict[str, object]) -> bool:
    """Whether a version 1 message asks for the server's capabilities (protocol 1.2)."""
    return message.get(CAPS_FIELD) == CAPS_REQUEST
