"""Frames to log lines: decode, validate, find the facility, check the signature.

Every frame ends either as a line queued for its file or as a rejection
counted under its reason and reported (rate-limited) with the peer address.
"""

import itertools
import logging
from typing import TYPE_CHECKING, Dict, Iterable, Optional, Sequence, Set, Tuple, Union

from loghog.batch import FLAG_BATCH
from loghog.protocol import FLAG_ACK_REQUEST, FLAG_ZLIB, Frame, FrameError, signature_matches
from loghogd.ackmarks import client_owner, parse_ack_fields
from loghogd.acks import AckJournal
from loghogd.batches import BatchIntake, asks_for_caps
from loghogd.facilities import MAX_MODULE_LENGTH, ROOT, Facilities, Facility
from loghogd.formats import Clock, Formatter, LineFormat, Render, classic_host, escape_controls, json_may_hold_controls
from loghogd.inflating import inflate
from loghogd.listeners import peer_host
from loghogd.messages import Rejected, decode_plain, parse_message
from loghogd.plainframes import PlainFrames, queue_classic
from loghogd.ratelimit import RateLimits, peer_address
from loghogd.record import Record, RecordRun, loghog_record
from loghogd.reporting import RateLimitedReporter, peer_text
from loghogd.routes import Route, RouteCache
from loghogd.stats import Counters
from loghogd.writer import LogFile, TooManyHosts, Writer

if TYPE_CHECKING:
    from loghogd.forward import Forwarder

log = logging.getLogger('loghogd')

_LOOKUP_LIMIT = MAX_MODULE_LENGTH + len(ROOT) + 1


class ReceiveClock:
    """The server receive time as the classic line's prefix (formats.Clock caches per second)."""

    def __init__(self) -> None:
        self._clock = Clock()

    def prefix(self, now: float) -> str:
        return self._clock.text(now) + ' - '


def lookup_module(module: str) -> str:
    """The part of a peer's `module` that a configured facility can match.

    Facilities walk up one dot at a time, copying the name at each step, so a
    1 MB module of dots would cost minutes of CPU. No configured module is
    longer than MAX_MODULE_LENGTH, so a longer name starts its walk at its
    last dot within reach: the facility found is the same.
    """
    if len(module) <= _LOOKUP_LIMIT:
        return module
    dot = module.rfind('.', 0, _LOOKUP_LIMIT + 1)
    return module[:dot] if dot > 0 else ROOT


class Processor:
    """Turns the frames of a loop pass into queued lines for the writer."""

    def __init__(self, facilities: Facilities, writer: Writer, counters: Counters,
                 reporter: RateLimitedReporter, max_message_size: int,
                 peer_rate_limit: Optional[float] = None) -> None:
        self.writer = writer
        self.peer_rate_limit = peer_rate_limit
        self.rate_limits = RateLimits()
        self.held_for_resend: Set[object] = set()
        self.counters = counters
        self.reporter = reporter
        self.max_message_size = max_message_size
        self.facilities = facilities
        self.routes = RouteCache(writer)
        self._formatters: Dict[LineFormat, Formatter] = {}
        self.acks: Optional[AckJournal] = None
        self._told_signature_unused: Set[str] = set()
        self.ack_targets: Dict[object, str] = {}
        self.forwarder: Optional['Forwarder'] = None
        self.caps_asked: Dict[object, None] = {}  # connections whose frame asked for capabilities (1.2)
        self.batches = BatchIntake(self)
        self.plain_frames = PlainFrames(self.routes, writer, counters)

    def set_facilities(self, facilities: Facilities) -> None:
        """Take a reloaded facilities.conf into use for the next message."""
        self.facilities = facilities
        self.routes.clear()
        self.writer.forget_facilities(set(facilities))

    def process(self, frames: Sequence[Frame], peer: str, now: float, prefix: str,
                ack_target: object = None) -> None:
        """Queue a line for every good frame; count and report every bad one.

        On a stream (`ack_target` is its connection) an ACK_REQUEST frame is
        checked like any other, then against the journal of handled records:
        an accepted one is noted in the journal, a rejected one only on its
        connection; either way the connection is owed an acknowledgement.
        The leading frames that a 0.7 client sends unsigned to a plain route
        take a quicker path to the same lines (loghogd.plainframes).
        """
        routes = self.routes.fresh()
        accepted = self.counters.accepted_by_facility
        queue = self.writer.queue
        acks = self.acks if ack_target is not None else None
        peer_key = self._peer_key(peer)
        if decode_plain is not None and peer_key is None and self.routes.plain:
            frames = frames[self.plain_frames.take(frames, prefix, now):]
        for flags, payload in frames:
            if flags & FLAG_BATCH:
                self.batches.process(flags, payload, peer, now, prefix, ack_target)
                continue
            client_id = None
            try:
                if flags & FLAG_ZLIB:
                    payload = inflate(payload, self.max_message_size)
                message, app_id, module, hostname = parse_message(payload)
                if flags & FLAG_ACK_REQUEST and acks is not None:
                    client_id, seq = self._ack_request(message, ack_target)
                route = routes.get((app_id, module, hostname))
                if route is None:
                    route = self._route(app_id, module, hostname)
                facility, logfile, host_text, name, render = route
                if facility.secret is not None:
                    self._check_signature(facility, message)
                elif 'signature' in message:
                    self._note_unused_signature(facility, peer)
                if client_id is not None:
                    owner = client_owner(app_id, facility.secret)
                    if not acks.may_use(client_id, owner):
                        raise Rejected('client_id_taken', 'client id %s belongs to another application or secret'
                                       % client_id, app_id)
                    if acks.is_duplicate(client_id, seq):
                        self.counters.duplicates_dropped += 1
                        continue
                if (facility.rate_limit is not None or peer_key is not None) and self._over_rate(
                        facility, logfile, peer_key, now):
                    if client_id is not None:
                        self._hold_for_resend(ack_target, peer, facility)
                        break
                    raise Rejected('rate_limited', 'over the rate limit of %s' % facility.name, app_id)
            except Rejected as rejected:
                self._reject(rejected.reason, str(rejected), peer, rejected.app_id)
                if client_id is not None:
                    acks.note_rejected(ack_target, client_id, seq)
                continue
            except FrameError as error:
                self._reject(error.reason, str(error), peer)
                continue
            if facility.forward and not self.forwarder.offer(
                    loghog_record(message, hostname, now, peer, client_id, seq if client_id is not None else None),
                    facility):
                self._reject('forward_queue_full', 'the forward queue is full', peer, app_id)
                if client_id is not None:
                    acks.note_rejected(ack_target, client_id, seq)
                continue
            if logfile is None:
                accepted[name] += 1
                if client_id is not None:
                    evicted = acks.note(client_id, seq, None, owner)
                    if evicted:
                        self._evicted(peer, evicted)
                continue
            if render is None:
                body = message['body']
                if json_may_hold_controls(payload):
                    body = escape_controls(body)
                line = prefix + host_text + body + '\n'
            else:
                line = render(loghog_record(message, hostname, now, peer, client_id,
                                            seq if client_id is not None else None))
            queue(logfile, line, now)
            accepted[name] += 1
            if client_id is not None:
                evicted = acks.note(client_id, seq, logfile, owner)
                if evicted:
                    self._evicted(peer, evicted)
                self.writer.write_this_pass(logfile)
        if self.forwarder is not None:
            self._flush_forwarded()

    def process_records(self, runs: Iterable[RecordRun], peer: str, now: float, prefix: str) -> None:
        """Queue a line for every record of an input that cannot be signed (syslog); count and report the rest.

        Records come in runs that share one route (record.py), and the
        classic lines of a run are queued as one string. A facility with a
        `secret` takes only signed records, so these are rejected there as
        `unsigned`.
        """
        routes = self.routes.fresh()
        accepted = self.counters.accepted_by_facility
        peer_key = self._peer_key(peer)
        for app_id, module, host, bodies, records in runs:
            try:
                route = routes.get((app_id, module, host))
                if route is None:
                    route = self._route(app_id, module, host)
                facility, logfile, host_text, name, render = route
                if facility.secret is not None:
                    raise Rejected('unsigned', '%s takes only signed records, and syslog cannot be signed'
                                   % facility.name, facility.app_id)
            except Rejected as rejected:
                for _body in bodies:
                    self._reject(rejected.reason, str(rejected), peer, rejected.app_id)
                continue
            if facility.rate_limit is not None or peer_key is not None:
                kept = self._within_rate(facility, logfile, peer_key, now, len(bodies), peer)
                if kept < len(bodies):
                    bodies, every = bodies[:kept], records
                    records = lambda every=every, kept=kept: itertools.islice(every(), kept)  # noqa: E731
            count = len(bodies)
            if facility.forward:
                for record in records():
                    if not self.forwarder.offer(record, facility):
                        count -= 1
                        self._reject('forward_queue_full', 'the forward queue is full', peer, facility.app_id)
            if logfile is None:
                accepted[name] += count
                continue
            if render is None:
                queue_classic(self.writer, logfile, prefix + host_text, bodies, now)
            else:
                for record in records():
                    self.writer.queue(logfile, render(record), now)
            accepted[name] += count
        if self.forwarder is not None:
            self._flush_forwarded()

    def _flush_forwarded(self) -> None:
        """The forward queue is written before the pass's journal; what the disk refused is rejected."""
        for _refused in range(self.forwarder.flush()):
            self.counters.reject('forward_queue_full')

    def process_stream_record(self, record: Record, prefix: str, now: float, client_id: str, seq: int) -> None:
        """Queue the line of a record from the stream, noted in the journal as `client_id`'s `seq`.

        A record the writer refuses is noted as handled too: JetStream must
        not deliver it again.
        """
        try:
            route = self.routes.fresh().get((record.app_id, record.module, record.host))
            if route is None:
                route = self._route(record.app_id, record.module, record.host)
            facility, logfile, host_text, name, render = route
            if logfile is None:
                raise Rejected('not_written', 'facility %s has write = no' % facility.name, facility.app_id)
        except Rejected as rejected:
            self._reject(rejected.reason, str(rejected), 'stream', rejected.app_id)
            self.acks.note(client_id, seq, None, client_id)
            return
        if render is None:
            self.writer.queue(logfile, prefix + host_text + escape_controls(record.body) + '\n', now)
        else:
            self.writer.queue(logfile, render(record), now)
        self.counters.accepted_by_facility[name] += 1
        self.acks.note(client_id, seq, logfile, client_id)
        self.writer.write_this_pass(logfile)

    def note_unreadable(self, reason: str, detail: str, peer: str, client_id: str, seq: int) -> None:
        """Count and report a stream message that is no record; handled, so not delivered again."""
        self._reject(reason, detail, peer)
        self.acks.note(client_id, seq, None, client_id)

    def route(self, app_id: str, module: str, hostname: str) -> Union[Route, Rejected]:
        """The (cached) route of a record, or why it has none."""
        route = self.routes.fresh().get((app_id, module, hostname))
        if route is not None:
            return route
        try:
            return self._route(app_id, module, hostname)
        except Rejected as rejected:
            return rejected

    def _route(self, app_id: str, module: str, hostname: str) -> Route:
        facility = self.facilities.lookup(app_id, lookup_module(module))
        if facility is None:
            raise Rejected('unknown_app', 'no facility for app %s' % peer_text(app_id), peer_text(app_id))
        try:
            logfile = self.writer.file_for(facility, hostname) if facility.write else None
        except TooManyHosts as error:
            raise Rejected('too_many_hosts', str(error), facility.app_id) from None
        route = (facility, logfile, classic_host(hostname) + ' - ', facility.name, self._render(facility.line_format))
        self.routes.keep((app_id, module, hostname), route)
        return route

    def _render(self, line_format: LineFormat) -> Optional[Render]:
        """None for the classic line, which process() builds from the server's cached prefix."""
        if line_format.is_classic:
            return None
        if line_format not in self._formatters:
            self._formatters[line_format] = Formatter(line_format)
        return self._formatters[line_format].render

    def _ack_request(self, message: Dict[str, object], ack_target: object) -> Tuple[str, int]:
        client_id, seq = parse_ack_fields(message)
        if client_id is None:
            raise Rejected('bad_ack_fields', 'ACK_REQUEST frame without a valid client_id and seq')
        self.ack_targets[ack_target] = client_id
        if asks_for_caps(message):
            self.caps_asked[ack_target] = None
        return client_id, seq

    @staticmethod
    def _check_signature(facility: Facility, message: Dict[str, object]) -> None:
        signature = message.get('signature')
        if type(signature) is not str:
            raise Rejected('bad_signature', 'message for %s carries no signature' % facility.name,
                           facility.app_id)
        if not signature_matches(facility.secret, message['app_id'], message['module'], message['stamp'],
                                 message['nsecs'], message['body'], signature):
            raise Rejected('bad_signature', 'message for %s has a wrong signature' % facility.name,
                           facility.app_id)

    def _peer_key(self, peer: str) -> Optional[str]:
        """What peer_rate_limit counts `peer`'s records under; None when there is no peer_rate_limit."""
        return peer_host((peer_address(peer),)) if self.peer_rate_limit is not None else None

    def _over_rate(self, facility: Facility, logfile: Optional[LogFile], peer_key: Optional[str], now: float) -> bool:
        """Whether a record goes over its facility's rate_limit (per file) or its peer's peer_rate_limit."""
        limits = self.rate_limits
        key = logfile.path if logfile is not None else facility.name  # a facility that only forwards has no file
        if facility.rate_limit is not None and not limits.allow(key, facility.rate_limit, now):
            return True
        return peer_key is not None and not limits.allow(peer_key, self.peer_rate_limit, now)

    def _within_rate(self, facility: Facility, logfile: Optional[LogFile], peer_key: Optional[str], now: float,
                     count: int, peer: str) -> int:
        """How many of a run's `count` records the rate limits let through; the rest are rejected as rate_limited."""
        kept = sum(not self._over_rate(facility, logfile, peer_key, now) for _record in range(count))
        for _record in range(count - kept):
            self._reject('rate_limited', 'over the rate limit of %s' % facility.name, peer, facility.app_id)
        return kept

    def _hold_for_resend(self, connection: object, peer: str, facility: Facility) -> None:
        """An acknowledged record over a rate limit: it and the rest of the batch stay unacknowledged.

        The server closes the connection after the pass, and the client
        resends from its first unacknowledged record when it reconnects:
        it slows down instead of losing records.
        """
        self.counters.rate_limited_resends += 1
        self.held_for_resend.add(connection)
        self.reporter.report('rate_limited_resend', logging.WARNING, 'acknowledged records from %s for %s are over '
                             'the rate limit: not acknowledged, closing the connection so that the client resends '
                             'them', peer, facility.name)

    def take_held_for_resend(self) -> Set[object]:
        """The connections to close after this pass, so that their clients resend (over a rate limit)."""
        held, self.held_for_resend = self.held_for_resend, set()
        return held

    def take_ack_targets(self) -> Dict[object, str]:
        """The connections owed an ACK since the last call, each with its client id."""
        targets, self.ack_targets = self.ack_targets, {}
        return targets

    def forget_connection(self, connection: object) -> None:
        self.ack_targets.pop(connection, None)
        self.caps_asked.pop(connection, None)
        if self.acks is not None:
            self.acks.forget_connection(connection)

    def _evicted(self, peer: str, count: int) -> None:
        self.counters.ack_clients_evicted += count
        self.reporter.report('ack_clients', logging.WARNING, 'a new acknowledged-delivery client id from %s made '
                             'loghogd forget %d least recently seen ids of the busiest application '
                             '(max_ack_clients = %d)', peer, count, self.acks.max_clients)

    def _note_unused_signature(self, facility: Facility, peer: str) -> None:
        """A signed record for a facility without a secret: written, counted, and said once per facility."""
        self.counters.signature_unused += 1
        if facility.name not in self._told_signature_unused:
            self._told_signature_unused.add(facility.name)
            log.warning('%s signs its records (first from %s) but facilities.conf gives %s no secret:'
                        ' the signatures are not checked', facility.app_id, peer, facility.name)

    def _reject(self, reason: str, detail: str, peer: str, app_id: Optional[str] = None, count: int = 1) -> None:
        self.counters.reject(reason, app_id, count)
        self.reporter.report('reject:' + reason, logging.WARNING, 'rejected a message from %s (%s): %s',
                             peer, reason, detail)
