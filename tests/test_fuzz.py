"""Generated hostile input for the stream decoder and the processor, in-process.

Every frame fed to `Processor.process` must end up counted exactly once,
accepted or rejected under a reason, and nothing may raise. The fuzz runs
about 21 700 generated inputs in the quick suite and four times as many
under `-m slow`. Lines are really written (a Writer on a temporary logdir), so the
writer's encoding of what the processor accepted is exercised too, and no
path it opens may leave logdir.
"""

import errno
import json
import os
import tempfile
import time
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loghog.protocol import (CLIENT_FLAGS, FLAG_ACK_REQUEST, FLAG_ZLIB, HEADER, FrameError, StreamDecoder,
                             decode_datagram, encode_frame, encode_payload, inflate, sign)
from tests.support.daemon import facilities_conf
from loghogd.acks import JOURNAL_NAME, AckJournal
from loghogd.facilities import MAX_MODULE_LENGTH, load_facilities
from loghogd.messages import MAX_NSECS, MAX_STAMP, Rejected, parse_message
from loghogd.pipeline import LoopPass
from loghogd.processor import Processor, lookup_module
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd import logfile as logfile_module
from loghogd import writer as writer_module
from loghogd.writer import Writer

MAX_MESSAGE_SIZE = 16 * 1024
FACILITIES = facilities_conf({'app': {}, 'app:web': {}, 'app:web.requests.slow': {}, 'signed': {'secret': 'sekrit'},
                               'perhost': {'file_per_host': 'yes'}})
APP_IDS = ['app', 'signed', 'perhost', 'nosuchapp', '', '../app', 'app\x00', 'APP', 'аpp']
FIELDS = ['version', 'app_id', 'module', 'stamp', 'nsecs', 'hostname', 'body', 'signature']
REQUIRED = ['version', 'app_id', 'module', 'stamp', 'nsecs', 'body']
HUGE_NUMBERS = [10 ** 300, -10 ** 300, 2 ** 64, -2 ** 63 - 1, 1e308, -1e308, 5e-324]
LONG_FACTOR = 4
"""How many times the quick suite's examples a `_long` (slow) variant runs: it keeps the whole suite within CI's hour."""


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, suppress_health_check=list(HealthCheck))


class Harness:
    """A Processor and Writer on a temporary logdir, fed like the server feeds them."""

    def __init__(self, directory: str, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.directory = directory
        self.max_message_size = max_message_size
        self.logdir = os.path.join(directory, 'log')
        facilities_path = os.path.join(directory, 'facilities.conf')
        with open(facilities_path, 'w', encoding='utf-8') as stream:
            stream.write(FACILITIES)
        self.counters = Counters()
        reporter = RateLimitedReporter()
        self.writer = Writer(self.logdir, self.counters, reporter)
        self.processor = Processor(load_facilities(facilities_path), self.writer, self.counters, reporter,
                                   max_message_size)
        os.makedirs(os.path.join(directory, 'lib'))
        self.loop_pass = LoopPass(self.processor, self.writer)
        self.loop_pass.use_journal(AckJournal(os.path.join(directory, 'lib', JOURNAL_NAME)))
        self.frames_fed = 0
        self.streams_fed = 0

    def close(self) -> None:
        """Close the files it opened, so a thousand generated cases cost no descriptors."""
        for logfile in self.writer.open_files():
            logfile.close()
        self.processor.acks.close()

    def handled(self) -> int:
        counters = self.counters
        return (sum(counters.accepted_by_facility.values()) + sum(counters.rejected_by_reason.values())
                + counters.duplicates_dropped)

    def process(self, frames) -> None:
        """Every frame is counted once (accepted, rejected or a duplicate); the lines reach the disk."""
        before = self.handled()
        now = time.time()
        self.processor.process(frames, '127.0.0.1:1', now, '2026-01-01 00:00:00.000000 - ', self)
        self.frames_fed += len(frames)
        assert self.handled() - before == len(frames)
        self.flush(now)

    def flush(self, now: float) -> None:
        """Write what the processor queued, as the server's loop pass does; every path stays in logdir."""
        self.loop_pass.finish(now, force=True)
        self.processor.caps_asked.clear()
        for logfile in self.writer.open_files():
            assert not logfile.unwritten, logfile.path
            assert os.path.realpath(logfile.path).startswith(os.path.realpath(self.logdir) + os.sep)

    def feed_stream(self, data: bytes, cuts) -> None:
        """Split `data` at `cuts` like TCP would; count a framing error or a cut-off frame like the server."""
        decoder = StreamDecoder(self.max_message_size)
        self.streams_fed += 1
        decoded = 0
        start = 0
        for stop in sorted({min(cut, len(data)) for cut in cuts}) + [len(data)]:
            frames = decoder.feed(data[start:stop])
            decoded += sum(HEADER.size + len(payload) for _flags, payload in frames)
            start = stop
            self.process(frames)
            if decoder.error is not None:
                assert isinstance(decoder.error, FrameError) and decoder.error.reason
                self.counters.reject(decoder.error.reason)
                return
        assert decoded + decoder.pending_bytes == len(data)
        if decoder.pending_bytes:
            self.counters.reject('truncated')

    def feed_payloads(self, payloads, flags: int = 0) -> None:
        self.feed_stream(b''.join(encode_frame(payload, flags) for payload in payloads), [])


@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    """One harness for the whole module: its counters add up over every input."""
    built = Harness(str(tmp_path_factory.mktemp('fuzz')))
    yield built
    built.close()
    logdir = os.path.realpath(built.logdir)
    lib = os.path.realpath(os.path.join(built.directory, 'lib'))
    allowed = {logdir, lib, os.path.realpath(os.path.join(built.directory, 'facilities.conf'))}
    for top, directories, files in os.walk(built.directory):
        for name in directories + files:
            path = os.path.realpath(os.path.join(top, name))
            assert path in allowed or path.startswith((logdir + os.sep, lib + os.sep)), path
    print('\nfuzz: %d generated streams decoded, %d frames processed, %d accepted, %d duplicates, rejected %s'
          % (built.streams_fed, built.frames_fed, sum(built.counters.accepted_by_facility.values()),
             built.counters.duplicates_dropped,
             dict(built.counters.rejected_by_reason)))


# strategies -------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE_NUMBERS),
                         st.floats(allow_nan=False), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=6)
names = st.one_of(st.sampled_from(['root', 'web', 'web.requests', 'web.requests.slow.x', 'root.web', '',
                                   '.', '..', '../../etc', 'a/b', 'web\x00', 'web\n', 'wеb', 'x' * 4096]),
                  st.text(max_size=40))
hostnames = st.one_of(st.sampled_from(['web1', '', '..', '../../etc/passwd', '/etc', 'a\x00b', 'a\nb',
                                       '\x1b[31mred', 'h' * 4096, 'wеb1', '\u202ehost', '\ud800']),
                      st.text(max_size=40))
client_ids = st.one_of(st.sampled_from(['c1', 'c2', 'x' * 64, 'A-b_9']),
                       st.sampled_from(['', 'a b', 'x' * 65, 'é', 'c1\n', 5, None, ['c1']]), st.text(max_size=70))
seqs = st.one_of(st.integers(-2, 40), st.sampled_from([0, 2 ** 63 - 1, 2 ** 63, 10 ** 30, True, 1.5, '1', None]))
bodies = st.one_of(st.text(max_size=200), st.sampled_from(['\r', '\x1b[2J', '\n2026-01-01 00:00:00.000000 - '
                                                           'fake - line', '\ud800', '\udfff tail', '']))


@st.composite
def good_messages(draw):
    """A well-typed message for a known or unknown app, maybe signed, maybe not."""
    app_id = draw(st.sampled_from(APP_IDS))
    module, hostname, body = draw(names), draw(hostnames), draw(bodies)
    stamp = draw(st.integers(min_value=0, max_value=MAX_STAMP))
    nsecs = draw(st.integers(min_value=0, max_value=MAX_NSECS))
    message = {'version': 1, 'app_id': app_id, 'module': module, 'stamp': stamp, 'nsecs': nsecs,
               'hostname': hostname, 'body': body}
    if draw(st.booleans()):
        message['signature'] = sign(draw(st.sampled_from(['sekrit', 'wrong'])), app_id, module, stamp, nsecs,
                                    body)
    if draw(st.booleans()):
        message['client_id'] = draw(client_ids)
        message['seq'] = draw(seqs)
    return message


@st.composite
def mistyped_messages(draw):
    """A message with one or more fields removed or given a value of another type."""
    message = draw(good_messages())
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            message.pop(name, None)
        else:
            message[name] = draw(json_values)
    return message


def to_json(message, ensure_ascii: bool) -> bytes:
    return json.dumps(message, ensure_ascii=ensure_ascii).encode('utf-8', 'surrogatepass')


# the decoder and processor on random streams ------------------------------------

def check_random_bytes(harness, streams):
    for data, cuts in streams:
        harness.feed_stream(data, cuts)


def check_valid_headers_random_payloads(harness, payloads, flags, cuts):
    harness.feed_stream(b''.join(encode_frame(payload, flags) for payload in payloads), cuts)


def check_bad_zlib(harness, payload, cut):
    compressed = zlib.compress(payload)
    harness.feed_payloads([payload, compressed[:cut], compressed[cut:], compressed[:-1] + b'\xff'], FLAG_ZLIB)


def check_messages(harness, messages, ensure_ascii, compress, ack, cuts):
    payloads = [to_json(message, ensure_ascii) for message in messages]
    flags = (FLAG_ZLIB if compress else 0) | (FLAG_ACK_REQUEST if ack else 0)
    if compress:
        payloads = [zlib.compress(payload) for payload in payloads]
    harness.feed_stream(b''.join(encode_frame(payload, flags) for payload in payloads), cuts)


def check_mangled_json(harness, splices):
    """Valid JSON with bytes spliced in: bad UTF-8, stray quotes, lone escapes."""
    payloads = []
    for message, position, junk in splices:
        payload = to_json(message, False)
        position = min(position, len(payload))
        payloads.append(payload[:position] + junk + payload[position:])
    harness.feed_payloads(payloads)


def check_not_an_object(harness, values):
    harness.feed_payloads([json.dumps(value).encode('utf-8') for value in values])


random_bytes_args = dict(streams=st.lists(st.tuples(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=4)),
                                          min_size=1, max_size=8))
valid_header_args = dict(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
                         flags=st.sampled_from([0, FLAG_ZLIB, FLAG_ACK_REQUEST, CLIENT_FLAGS]),
                         cuts=st.lists(st.integers(0, 1300), max_size=4))
bad_zlib_args = dict(payload=st.one_of(st.binary(max_size=300), st.builds(to_json, good_messages(), st.booleans())),
                     cut=st.integers(0, 400))
message_args = dict(messages=st.lists(st.one_of(good_messages(), mistyped_messages()), min_size=1, max_size=4),
                    ensure_ascii=st.booleans(), compress=st.booleans(), ack=st.booleans(),
                    cuts=st.lists(st.integers(0, 2000), max_size=3))
splice_junk = st.one_of(st.binary(min_size=1, max_size=6),
                        st.sampled_from([b'\xff', b'\xc3', b'\xed\xa0\x80', b'\xf4\x90\x80\x80', b'\\ud800',
                                         b'\\udfff', b'"', b'\\', b'\x00', b'}{']))
mangled_args = dict(splices=st.lists(st.tuples(good_messages(), st.integers(0, 400), splice_junk), min_size=1,
                                     max_size=4))
not_an_object_args = dict(values=st.lists(json_values.filter(lambda value: not isinstance(value, dict)), min_size=1,
                                          max_size=6))

CHECKS = [  # name, property, strategies, examples in the quick suite (LONG_FACTOR times that under -m slow)
    ('random_bytes', check_random_bytes, random_bytes_args, 3500),
    ('valid_headers_random_payloads', check_valid_headers_random_payloads, valid_header_args, 3000),
    ('bad_zlib', check_bad_zlib, bad_zlib_args, 1000),
    ('messages_good_and_mistyped', check_messages, message_args, 1200),
    ('mangled_json', check_mangled_json, mangled_args, 800),
    ('json_not_an_object', check_not_an_object, not_an_object_args, 600),
]
for _name, _check, _arguments, _examples in CHECKS:
    globals()['test_fuzz_' + _name] = fuzz_settings(_examples)(given(**_arguments)(_check))
    globals()['test_fuzz_' + _name + '_long'] = pytest.mark.slow(fuzz_settings(LONG_FACTOR * _examples)(
        given(**_arguments)(_check)))
del _name, _check, _arguments, _examples


# one input at a time: the shapes named in the issue ------------------------------

def reasons(harness):
    return dict(harness.counters.rejected_by_reason)


def test_zip_bomb_of_100_mb_of_zeros_stops_at_the_limit_quickly():
    bomb = zlib.compress(b'\0' * (100 * 1024 * 1024), 9)
    assert len(bomb) < MAX_MESSAGE_SIZE * 8
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(FrameError) as raised:
            inflate(bomb, 1024 * 1024)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert raised.value.reason == 'oversized'
    assert peak < 8 * 1024 * 1024, peak
    assert elapsed < 5.0, elapsed


@given(size=st.integers(MAX_MESSAGE_SIZE - 64, MAX_MESSAGE_SIZE * 64))
@settings(max_examples=200, suppress_health_check=list(HealthCheck))
def test_compressed_payload_over_the_limit_is_rejected_as_oversized(harness, size):
    payload = b'{"body": "' + b'a' * size + b'"}'
    reason = outcome(harness, zlib.compress(payload), FLAG_ZLIB)
    assert reason == ('oversized' if len(payload) > MAX_MESSAGE_SIZE else 'missing_field')


@pytest.mark.parametrize('opener, closer', [(b'[', b']'), (b'{"a": ', b'}'), (b'{"body": [', b']}')])
def test_nesting_100k_deep_is_bad_json_not_a_crash(opener, closer):
    payload = opener * 100000 + closer * 100000
    with pytest.raises(Rejected) as raised:
        parse_message(payload)
    assert raised.value.reason == 'bad_json'


def test_deep_nesting_through_the_processor_is_counted(tmp_path, make_harness):
    harness = make_harness(str(tmp_path), 1024 * 1024)
    payloads = [b'[' * 100000 + b']' * 100000, b'{"app_id": ' * 60000 + b'1' + b'}' * 60000]
    harness.process([(0, payload) for payload in payloads])
    assert harness.counters.rejected_by_reason == {'bad_json': 2}


@pytest.fixture
def make_harness():
    """A Harness per call, closed when the test ends."""
    made = []

    def make(directory: str, max_message_size: int = MAX_MESSAGE_SIZE) -> Harness:
        made.append(Harness(directory, max_message_size))
        return made[-1]
    yield make
    for harness in made:
        harness.close()


def outcome(harness, payload: bytes, flags: int = 0) -> str:
    """'accepted' or the one reason the payload was rejected under."""
    accepted_before, rejected_before = dict(harness.counters.accepted_by_facility), reasons(harness)
    harness.feed_payloads([payload], flags)
    if dict(harness.counters.accepted_by_facility) != accepted_before:
        return 'accepted'
    after = reasons(harness)
    changed = [reason for reason in after if after[reason] != rejected_before.get(reason, 0)]
    assert len(changed) == 1, (payload[:80], changed)
    return changed[0]


def expected_outcome(field: str, value: object) -> str:
    """What a signed message for `signed` becomes with `field` set to `value`."""
    right_type = int if field in ('version', 'stamp', 'nsecs') else str
    if field == 'signature':
        return 'bad_signature'
    if type(value) is not right_type:
        return 'missing_field' if value is None and field in REQUIRED else 'bad_field'
    if field in ('stamp', 'nsecs') and not 0 <= value <= {'stamp': MAX_STAMP, 'nsecs': MAX_NSECS}[field]:
        return 'bad_field'
    if field == 'app_id':
        return 'unknown_app'
    return 'accepted' if field in ('version', 'hostname') else 'bad_signature'


@pytest.mark.parametrize('field', REQUIRED + ['hostname', 'signature'])
@pytest.mark.parametrize('value', [None, True, 1, 1.5, 'text', [], {}, [1, 'a'], {'a': 1}, 10 ** 300, -1])
def test_every_field_with_every_wrong_type(harness, field, value):
    message = json.loads(encode_payload('signed', 'root', 1, 2, 'web1', 'body', secret='sekrit'))
    unchanged = type(message.get(field)) is type(value) and message.get(field) == value
    message[field] = value
    expected = {'accepted'} if unchanged else {expected_outcome(field, value)}
    if field == 'hostname' and value is None:
        expected.add('missing_field')  # an explicit null reads as "no hostname given": either name will do
    assert outcome(harness, json.dumps(message).encode('utf-8')) in expected


@pytest.mark.parametrize('number, expected', [
    (b'1e999', 'bad_field'), (b'-1e999', 'bad_field'), (b'NaN', 'bad_field'), (b'Infinity', 'bad_field'),
    (b'1.' + b'5' * 5000, 'bad_field'), (b'1' * 4000, 'accepted'), (b'-' + b'9' * 4000, 'accepted'),
    (b'1' * 5000, 'bad_json'), (b'1' * 15000, 'bad_json')])
@pytest.mark.parametrize('field', ['stamp', 'nsecs', 'version'])
def test_huge_numbers_are_counted(harness, field, number, expected):
    if field != 'version' and expected == 'accepted':
        expected = 'bad_field'  # out of the time range
    values = {b'version': b'1', b'stamp': b'1', b'nsecs': b'0', field.encode(): number}
    payload = b'{"version": %(version)s, "app_id": "app", "module": "root", "stamp": %(stamp)s, ' \
              b'"nsecs": %(nsecs)s, "body": "big"}' % values
    assert outcome(harness, payload) == expected


@given(nsecs=st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_NSECS + 1)),
       stamp=st.integers(0, MAX_STAMP))
@fuzz_settings(300)
def test_nsecs_outside_one_second_is_rejected_even_when_signed(harness, nsecs, stamp):
    payload = encode_payload('signed', 'root', stamp, nsecs, 'web1', 'body', secret='sekrit')
    assert outcome(harness, payload) == 'bad_field'


@given(stamp=st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_STAMP + 1)),
       nsecs=st.integers(0, MAX_NSECS))
@fuzz_settings(300)
def test_stamp_outside_year_1970_to_9999_is_rejected(harness, stamp, nsecs):
    assert outcome(harness, encode_payload('app', 'root', stamp, nsecs, 'web1', 'body')) == 'bad_field'


@given(stamp=st.integers(0, MAX_STAMP), nsecs=st.integers(0, MAX_NSECS))
@fuzz_settings(300)
def test_every_time_in_range_is_accepted(harness, stamp, nsecs):
    payload = encode_payload('signed', 'root', stamp, nsecs, 'web1', 'body', secret='sekrit')
    assert outcome(harness, payload) == 'accepted'


def test_a_digit_of_a_signed_body_cannot_move_into_nsecs(harness):
    signed = json.loads(encode_payload('signed', 'root', 1700000000, 123456789, 'web1', '42 failed logins',
                                       secret='sekrit'))
    assert outcome(harness, json.dumps(signed).encode('utf-8')) == 'accepted'
    forged = dict(signed, nsecs=1234567894, body='2 failed logins')
    assert outcome(harness, json.dumps(forged).encode('utf-8')) == 'bad_field'


def test_lone_surrogates_are_written_escaped(tmp_path, make_harness):
    harness = make_harness(str(tmp_path))
    payload = b'{"version": 1, "app_id": "app", "module": "root", "stamp": 1, "nsecs": 0, ' \
              b'"hostname": "h\\ud800", "body": "a\\udfffb \\ud83d\\ude00 \\u00e9"}'
    harness.feed_payloads([payload])
    with open(os.path.join(harness.logdir, 'app', 'root.log'), 'rb') as stream:
        assert stream.read() == '2026-01-01 00:00:00.000000 - h\\ud800 - a\\udfffb 😀 é\n'.encode('utf-8')


@pytest.mark.parametrize('junk', [b'\xff', b'\xc0\xaf', b'\xed\xa0\x80', b'\xf8\x88\x80\x80\x80'])
def test_bad_utf8_is_bad_json(harness, junk):
    payload = b'{"version": 1, "app_id": "app", "module": "root", "stamp": 1, "nsecs": 0, "body": "%s"}' % junk
    assert outcome(harness, payload) == 'bad_json'


def test_reserved_flags_and_oversized_headers_kill_only_the_stream(harness):
    before = reasons(harness)
    harness.feed_stream(encode_frame(b'{}') + HEADER.pack(1, 0x10) + b'x', [])
    harness.feed_stream(HEADER.pack(MAX_MESSAGE_SIZE + 1, 0), [])
    harness.feed_stream(HEADER.pack(0xFFFFFFFF, 0xFFFFFFFF), [])
    after = reasons(harness)
    delta = {reason: after[reason] - before.get(reason, 0) for reason in after if after[reason] != before.get(reason)}
    assert delta == {'missing_field': 1, 'reserved_flags': 1, 'oversized': 2}


@given(data=st.binary(max_size=200))
@settings(max_examples=500)
def test_datagrams_raise_only_frame_errors(data):
    try:
        decode_datagram(data, MAX_MESSAGE_SIZE)
    except FrameError as error:
        assert error.reason in ('truncated', 'bad_length', 'oversized', 'reserved_flags')


# the cost of a long module name -------------------------------------------------

def test_a_megabyte_module_of_dots_costs_linear_time(tmp_path, make_harness):
    """Walking a 500 000-dot module up one dot at a time used to take minutes."""
    harness = make_harness(str(tmp_path), 2 * 1024 * 1024)
    modules = ['a.' * 500000, '.' * 1000000, 'root.' + 'web.' * 250000, 'web.requests.slow.' + 'x.' * 400000]
    started = time.monotonic()
    harness.feed_payloads([encode_payload('app', module, 1, 0, 'h', 'dots') for module in modules])
    assert time.monotonic() - started < 10.0
    assert dict(harness.counters.accepted_by_facility) == {'app:root': 2, 'app:web': 1,
                                                           'app:web.requests.slow': 1}


def test_long_route_keys_are_not_cached(tmp_path, make_harness):
    harness = make_harness(str(tmp_path), 2 * 1024 * 1024)
    harness.feed_payloads([encode_payload('app', 'm%d.' % i + 'x' * 100000, 1, 0, 'h', 'b') for i in range(20)])
    assert sum(harness.counters.accepted_by_facility.values()) == 20
    assert sum(len(key[1]) for key in harness.processor.routes.routes) < 20 * 1000


module_parts = st.sampled_from(['root', 'web', 'requests', 'slow', 'x', '', 'y' * 60])


@pytest.fixture(scope='module')
def deep_facilities(tmp_path_factory):
    """The fuzz facilities plus one whose module is close to the length limit."""
    path = str(tmp_path_factory.mktemp('deep') / 'facilities.conf')
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(FACILITIES + '\n[app:web.%s.%s]\nrotate = daily\nbackup_count = 1\n' % ('y' * 60, 'y' * 60))
    return load_facilities(path)


@given(parts=st.lists(module_parts, max_size=12))
@settings(max_examples=1500, suppress_health_check=list(HealthCheck))
def test_trimmed_module_finds_the_same_facility(deep_facilities, parts):
    module = '.'.join(parts)
    assert deep_facilities.lookup('app', lookup_module(module)) == deep_facilities.lookup('app', module)
    assert len(lookup_module(module)) <= MAX_MODULE_LENGTH + len('root.')


# the writer under failing writes ---------------------------------------------------

class FlakyOs:
    """The os module for log files, with write() failing or writing short as planned."""

    def __init__(self) -> None:
        self.plan = []

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        if self.plan:
            step = self.plan.pop(0)
            if step < 0:
                raise OSError(errno.ENOSPC, 'No space left on device')
            return os.write(fd, bytes(data[:step]))
        return os.write(fd, data)


write_plans = st.lists(st.one_of(st.just(-1), st.just(-1), st.integers(0, 150)), max_size=3)  # -1: ENOSPC
write_steps = st.lists(st.tuples(st.integers(0, 8), write_plans), min_size=1, max_size=16)


def check_writer_under_failing_writes(steps):
    """Full disks and short writes: each line ends on disk whole, once, in order, or is counted as dropped."""
    flaky = FlakyOs()
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        patch.setattr(logfile_module, 'os', flaky)
        patch.setattr(writer_module, 'MAX_HELD_BYTES', 400)
        harness = Harness(directory)
        writer = harness.writer
        facility = harness.processor.facilities.lookup('app', 'root')
        logfile = writer.file_for(facility, 'h')
        queued = []
        for count, plan in steps + [(1, [])]:
            lines = ['L%04d %s\n' % (len(queued) + i, 'x' * ((len(queued) + i) * 7 % 60)) for i in range(count)]
            queued += lines
            for line in lines:
                writer.queue(logfile, line, 0.0)
            flaky.plan = list(plan)
            writer.flush(time.time(), force=True)
        flaky.plan = []
        writer.flush(time.time(), force=True)
        with open(logfile.path, encoding='ascii') as stream:
            on_disk = stream.read()
        harness.close()
    assert on_disk.endswith('\n')
    lines = on_disk[:-1].split('\n')
    whole = [line + '\n' for line in lines if line + '\n' in queued]
    torn = [line for line in lines if line + '\n' not in queued]
    assert whole == sorted(set(whole))
    assert all(line and any(full.startswith(line) for full in queued) for line in torn), torn
    assert len(whole) + harness.counters.messages_dropped_unwritable == len(queued)


test_writer_keeps_or_counts_every_line_when_writes_fail = fuzz_settings(1000)(
    given(steps=write_steps)(check_writer_under_failing_writes))
test_writer_keeps_or_counts_every_line_when_writes_fail_long = pytest.mark.slow(fuzz_settings(4000)(
    given(steps=write_steps)(check_writer_under_failing_writes)))


def test_a_flood_of_new_client_ids_evicts_only_its_own_application_and_is_reported(tmp_path, make_harness,
                                                                                    caplog):
    harness = make_harness(str(tmp_path))
    harness.processor.acks.max_clients = 100
    signed = [encode_payload('signed', 'root', 1, 0, 'h', 'real', secret='sekrit', client_id='real-%d' % number,
                             seq=1) for number in range(10)]
    harness.feed_payloads(signed, FLAG_ACK_REQUEST)
    flood = [encode_payload('app', 'root', 1, 0, 'h', 'flood', client_id='flood-%d' % number, seq=1)
             for number in range(300)]
    harness.feed_payloads(flood, FLAG_ACK_REQUEST)
    acks = harness.processor.acks
    assert all(acks.seq_to_ack('real-%d' % number) == 1 for number in range(10))
    assert harness.counters.ack_clients_evicted == 300 - acks.owners['app'] > 200
    assert 'client id from 127.0.0.1:1 made loghogd forget' in caplog.text
