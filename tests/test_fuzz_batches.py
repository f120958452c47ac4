"""Generated hostile protocol 1.2 batches through the processor, with each decoder.

Like tests/test_fuzz.py for version 1: every record of a batch frame fed to
`Processor.process` ends up counted exactly once (accepted, rejected under
a reason, or a duplicate), a batch that cannot be decoded at all counts as
one rejection, nothing raises, and lines are really written. Each check
runs with the msgspec decoder and with the stdlib one. A batch renders the
same lines as the same records sent as version 1 frames.
"""

import json
import os
import time
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loghog import batch as wire
from loghog.batch import FLAG_BATCH, FLAG_SIGNED, decode_batch, mac, record_text, split_mac
from loghog.protocol import FLAG_ACK_REQUEST, FLAG_ZLIB, FrameError, encode_message, inflate
from loghogd import batches
from loghogd.facilities import load_facilities
from tests.support.daemon import facilities_conf
from tests.test_fuzz import (APP_IDS, LONG_FACTOR, MAX_MESSAGE_SIZE, Harness, bodies, fuzz_settings, hostnames,
                             json_values, names, splice_junk)

PREFIX = '2026-01-01 00:00:00.000000 - '


class BatchHarness(Harness):
    """The fuzz harness, counting a batch frame as its records."""

    def process(self, frames) -> None:
        before = self.handled()
        self.processor.process(frames, '127.0.0.1:1', time.time(), PREFIX, self)
        self.frames_fed += len(frames)
        handled = self.handled() - before
        expected = [expected_counts(flags, payload) for flags, payload in frames]
        assert min(sum(low for low, _ in expected), handled) == sum(low for low, _ in expected) \
            and handled <= sum(high for _, high in expected), (handled, expected)
        self.flush(time.time())


def expected_counts(flags: int, payload: bytes):
    """(least, most) records a frame counts as: its records, or one for a batch that does not decode."""
    try:
        if flags & FLAG_ZLIB:
            payload = inflate(payload, MAX_MESSAGE_SIZE)
        data, _ = split_mac(payload, flags)
        count = len(decode_batch(data)[0].records)
    except FrameError:
        return 1, 1
    return (count, count) if count else (0, 1)


@pytest.fixture(scope='module', params=['msgspec', 'stdlib'])
def harness(request, tmp_path_factory):
    """One harness per decoder: its counters add up over every input."""
    if request.param == 'stdlib':
        patch = pytest.MonkeyPatch()
        patch.setattr(batches, 'decode', decode_batch)
    built = BatchHarness(str(tmp_path_factory.mktemp('fuzz-batches')))
    yield built
    built.close()
    if request.param == 'stdlib':
        patch.undo()
    print('\nbatch fuzz (%s): %d frames, %d accepted, %d duplicates, rejected %s'
          % (request.param, built.frames_fed, sum(built.counters.accepted_by_facility.values()),
             built.counters.duplicates_dropped, dict(built.counters.rejected_by_reason)))


# strategies -------------------------------------------------------------------

optional_fields = st.tuples(st.one_of(st.none(), st.integers(0, 60)), st.one_of(st.none(), st.text(max_size=10)),
                            st.one_of(st.none(), bodies), st.one_of(st.none(), bodies),
                            st.one_of(st.none(), st.integers(0, 2 ** 22)), st.one_of(st.none(), st.text(max_size=20)),
                            st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values, max_size=3)))


@st.composite
def good_records(draw):
    fields = [draw(names), draw(st.integers(0, 2 ** 62)), draw(bodies)]
    return fields + list(draw(optional_fields))[:draw(st.integers(0, 7))]


bad_records = st.one_of(st.lists(json_values, max_size=12), json_values,
                        st.builds(lambda record, index, value: record[:index] + [value] + record[index + 1:],
                                  good_records(), st.integers(0, 9), json_values))
client_ids = st.one_of(st.sampled_from(['c1', 'c2', 'A-b_9']), st.sampled_from(['', 'a b', 'x' * 65, 5, ['c1']]))
first_seqs = st.one_of(st.integers(1, 60), st.sampled_from([0, -1, 2 ** 63 - 1, 2 ** 63, True, 1.5, '1']))


@st.composite
def batch_frames(draw):
    """A batch frame: mostly well-formed, with bad records, bad shared fields, wrong or missing MACs."""
    ack = draw(st.booleans())
    header = ['lh1.2', draw(st.sampled_from(APP_IDS + ['signed'] * 3)), draw(hostnames),
              draw(client_ids) if ack else None, draw(first_seqs) if ack else None]
    if draw(st.integers(0, 9)) == 0:
        header[draw(st.integers(0, 4))] = draw(json_values)
    records = draw(st.lists(st.one_of(good_records(), good_records(), bad_records), min_size=1, max_size=6))
    data = json.dumps(header + [records], ensure_ascii=draw(st.booleans())).encode('utf-8', 'surrogatepass')
    flags = FLAG_BATCH | (FLAG_ACK_REQUEST if ack else 0)
    secret = draw(st.sampled_from([None, 'sekrit', 'wrong']))
    if secret is not None:
        data += mac(secret, data)
        flags |= FLAG_SIGNED
    elif draw(st.booleans()):
        flags |= FLAG_SIGNED  # says signed, carries no MAC
    if draw(st.booleans()):
        data = zlib.compress(data)
        flags |= FLAG_ZLIB
    return flags, data


@st.composite
def mangled_batches(draw):
    flags, data = draw(batch_frames())
    if flags & FLAG_ZLIB:
        data = zlib.decompress(data)
        flags &= ~FLAG_ZLIB
    position = draw(st.integers(0, len(data)))
    return flags, data[:position] + draw(splice_junk) + data[position:]


random_batch_payloads = st.tuples(st.sampled_from([FLAG_BATCH, FLAG_BATCH | FLAG_SIGNED, FLAG_BATCH | FLAG_ZLIB,
                                                   FLAG_BATCH | FLAG_ACK_REQUEST]), st.binary(max_size=300))


def check_batches(harness, frames):
    harness.process(frames)


CHECKS = [  # name, frames, examples in the quick suite (LONG_FACTOR times that under -m slow)
    ('batches_count_every_record_once', st.lists(batch_frames(), min_size=1, max_size=4), 200),
    ('mangled_batches', st.lists(mangled_batches(), min_size=1, max_size=3), 100),
    ('random_batch_payloads', st.lists(random_batch_payloads, min_size=1, max_size=4), 100),
]
for _name, _frames, _examples in CHECKS:
    globals()['test_fuzz_' + _name] = fuzz_settings(_examples)(given(frames=_frames)(check_batches))
    globals()['test_fuzz_' + _name + '_long'] = pytest.mark.slow(fuzz_settings(LONG_FACTOR * _examples)(
        given(frames=_frames)(check_batches)))
del _name, _frames, _examples


# the same lines as version 1 -------------------------------------------------------

def pending_lines(harness):
    """The text queued for each file (a batch may queue many lines as one string)."""
    lines = {logfile.path: ''.join(logfile.pending) for logfile in harness.writer.dirty}
    harness.flush(time.time())
    return lines


def encodable(text: str) -> bool:
    """Text without lone surrogates: a batch sends those as '?', version 1 as escapes."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


@fuzz_settings(100)
@given(records=st.lists(st.tuples(names.filter(encodable), st.integers(0, 2 ** 40), st.integers(0, 999999999),
                                  bodies.filter(encodable), st.none() | bodies.filter(encodable)),
                        min_size=1, max_size=5),
       app_id=st.sampled_from(['app', 'perhost', 'signed']), hostname=hostnames.filter(encodable))
def test_a_batch_writes_the_lines_its_records_write_as_version_1_frames(harness, records, app_id, hostname):
    """A record's text is its body and exception joined, so the classic lines are the same."""
    secret = 'sekrit' if app_id == 'signed' else None
    process = harness.processor.process
    process([(0, encode_message(app_id, module, stamp, nsecs, hostname, record_text(body, exception), secret)[8:])
             for module, stamp, nsecs, body, exception in records], 'peer', time.time(), PREFIX)
    expected = pending_lines(harness)
    frame = wire.encode_batch(app_id, hostname, None, None,
                              [[module, stamp * 1000000 + nsecs // 1000, body, None, None, exception]
                               for module, stamp, nsecs, body, exception in records], secret)
    process([(FLAG_BATCH | FLAG_SIGNED if secret else FLAG_BATCH, frame[8:])], 'peer', time.time(), PREFIX)
    assert pending_lines(harness) == expected


def test_the_json_format_gets_every_structured_field(tmp_path):
    harness = BatchHarness(str(tmp_path))
    harness.processor.set_facilities(load_facilities_text(tmp_path, facilities_conf({'app': {'format': 'json'}})))
    frame = wire.encode_batch('app', 'web1', 'c1', 7, [
        ['billing', 1767225601000000, 'charge failed', 40, 'ERROR', 'Traceback ...\nValueError: card', None, 4242,
         'MainThread', {'order': 17, 'tags': ['vip']}]], 'other secret')
    harness.process([(int.from_bytes(frame[4:8], 'big'), frame[8:])])
    [line] = [line for path in harness.writer.open_files() for line in open(path.path, encoding='utf-8')]
    fields = json.loads(line)
    assert {key: fields[key] for key in ('host', 'app', 'module', 'level', 'message', 'exception', 'extra', 'pid',
                                         'thread', 'client_id', 'seq')} == {
        'host': 'web1', 'app': 'app', 'module': 'billing', 'level': 'ERROR', 'message': 'charge failed',
        'exception': 'Traceback ...\nValueError: card', 'extra': {'order': 17, 'tags': ['vip']}, 'pid': 4242,
        'thread': 'MainThread', 'client_id': 'c1', 'seq': 7}
    assert fields['sent'].startswith('2026-01-01T') or fields['sent'].startswith('2025-12-31T')
    assert harness.counters.signature_unused == 1
    harness.close()


def load_facilities_text(directory, text):
    path = os.path.join(str(directory), 'json-facilities.conf')
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(text)
    return load_facilities(path)
