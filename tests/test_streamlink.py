"""The JetStream link's pure parts: [forward]/[consume] options, stream records, the forward queue."""

import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.config import ConfigError, load_config
from loghogd.facilities import load_facilities
from loghogd.forwardqueue import QUEUE_NAME, ForwardQueue
from loghogd.record import Record, SyslogFields
from loghogd.streamconfig import parse_filters, parse_servers
from loghogd.streamrecord import BadStreamRecord, decode_record, encode_record, message_id, subject
from tests.test_config import config_error, write


# [forward] and [consume] ------------------------------------------------------

def test_no_sections_no_link(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ''))
    assert config.forward is None and config.consume is None


def test_forward_and_consume_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[forward]\nnats_servers = nats://10.0.0.1:4222, 10.0.0.2:4222\n'
                                         '[consume]\nnats_servers = tls://nats.example:4222\n'))
    assert config.forward.connection.servers == ('nats://10.0.0.1:4222', '10.0.0.2:4222')
    assert config.forward.connection.stream == 'LOGHOG'
    assert config.forward.subject_prefix == 'loghog'
    assert config.forward.max_queue_bytes == 1024 ** 3
    assert config.consume.durable == 'loghogd' and config.consume.subjects == ()


def test_consume_subjects_and_tls_files(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[consume]\nnats_servers = n1:4222\nsubjects = loghog.web.>, loghog.*.root\n'
                                         'tls_ca = ca.pem\ntls_cert = c.pem\ntls_key = c.key\n'
                                         'credentials = /etc/loghogd/nats.creds\n'))
    assert config.consume.subjects == ('loghog.web.>', 'loghog.*.root')
    assert config.consume.connection.tls_ca == str(tmp_path / 'ca.pem')
    assert config.consume.connection.credentials == '/etc/loghogd/nats.creds'


@pytest.mark.parametrize('text, key', [
    ('[forward]\n', 'nats_servers'),
    ('[forward]\nnats_servers = http://x/y\n', 'nats_servers'),
    ('[forward]\nnats_servers = n:1\nstream = a.b\n', 'stream'),
    ('[forward]\nnats_servers = n:1\nsubject_prefix = a.*\n', 'subject_prefix'),
    ('[forward]\nnats_servers = n:1\nmax_queue_bytes = lots\n', 'max_queue_bytes'),
    ('[consume]\nnats_servers = n:1\nsubjects = a b\n', 'subjects'),
    ('[consume]\nnats_servers = n:1\ndurable = x:y\n', 'durable'),
    ('[consume]\nnats_servers = n:1\ntls_cert = c.pem\n', 'tls_key'),
    ('[consume]\nnats_servers = n:1\nfilter = a\n', 'filter'),
])
def test_mistakes_name_section_and_key(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)
    assert '[%s] %s' % (text[1:text.index(']')], key) in message


def test_facility_write_and_forward(tmp_path: Path) -> None:
    path = write(tmp_path, '[app]\nrotate = daily\nbackup_count = 1\nwrite = no\nforward = yes\n'
                           '[app:sub]\nrotate = daily\nbackup_count = 1\n[other]\nrotate = daily\nbackup_count = 1\n',
                 'facilities.conf')
    facilities = {facility.name: facility for facility in load_facilities(path)}
    assert (facilities['app:root'].write, facilities['app:root'].forward) == (False, True)
    assert (facilities['app:sub'].write, facilities['app:sub'].forward) == (False, True)
    assert (facilities['other:root'].write, facilities['other:root'].forward) == (True, False)


def test_a_facility_that_neither_writes_nor_forwards_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[app]\nrotate = daily\nbackup_count = 1\nwrite = no\n', 'facilities.conf')
    with pytest.raises(ConfigError, match=r'\[app\] write: with write = no the facility must forward = yes'):
        load_facilities(path)


# records on the stream --------------------------------------------------------

texts = st.text(max_size=40)
optional = st.none() | texts
records = st.builds(
    Record, app_id=texts, module=texts, host=texts, body=st.text(max_size=200),
    received=st.floats(min_value=0, max_value=4e9), sent=st.none() | st.floats(min_value=0, max_value=4e9),
    level=optional, levelno=st.none() | st.integers(0, 100), exception=optional, stack=optional,
    pid=st.none() | st.integers(1, 2 ** 22), thread=optional,
    extra=st.none() | st.dictionaries(texts, st.integers() | texts | st.booleans(), max_size=4),
    syslog=st.none() | st.builds(SyslogFields, severity=st.integers(0, 7), facility=st.integers(0, 23),
                                 msgid=optional, procid=optional, structured_data=optional),
    peer=optional, client_id=st.none() | st.from_regex(r'[A-Za-z0-9_-]{1,64}', fullmatch=True),
    seq=st.none() | st.integers(1, 2 ** 63 - 1))


@given(records)
def test_a_record_comes_back_from_its_json_as_it_went(record: Record) -> None:
    assert decode_record(encode_record(record)) == record


@given(st.binary(max_size=300) | st.builds(lambda value: value.encode(), st.text(max_size=300)))
def test_any_bytes_decode_to_a_record_or_a_stated_error(payload: bytes) -> None:
    try:
        record = decode_record(payload)
    except BadStreamRecord as error:
        assert str(error)
    else:
        assert isinstance(record.body, str) and isinstance(record.received, (int, float))


@pytest.mark.parametrize('payload, reason', [
    (b'{"app_id":"a","module":"m","host":"h","body":"b"}', "'received' is missing"),
    (b'{"app_id":"a","module":"m","host":"h","body":1,"received":1}', "'body' has the wrong type int"),
    (b'{"app_id":"a","module":"m","host":"h","body":"b","received":1,"path":"/"}', "unknown field 'path'"),
    (b'{"app_id":"a","module":"m","host":"h","body":"b","received":NaN}', 'not a number'),
    (b'{"app_id":"a","module":"m","host":"h","body":"b","received":1,"syslog":{"severity":1}}', 'severity and'),
    (b'{"app_id":"a","module":"m","host":"h","body":"b","received":Infinity}', "'received' is no time"),
    (b'{"app_id":"a","module":"m","host":"h","body":"b","received":1,"sent":-1}', "'sent' is no time"),
    (b'[1]', 'not a JSON object'),
])
def test_bad_records_are_named(payload: bytes, reason: str) -> None:
    with pytest.raises(BadStreamRecord, match=reason):
        decode_record(payload)


def test_message_ids_and_subjects(tmp_path: Path) -> None:
    acked = Record('app', 'web.views', 'h', 'body', 1.0, client_id='c-1', seq=7)
    assert message_id(acked) == 'c-1-7'
    plain = Record('app', 'web', 'h', 'body', 1.0, sent=5.0)
    assert message_id(plain) != message_id(plain)  # two identical lines are two records
    assert message_id(plain).startswith('u:')
    path = write(tmp_path, '[app]\nrotate = daily\nbackup_count = 1\n[app:web]\nrotate = daily\nbackup_count = 1\n',
                 'facilities.conf')
    facility = load_facilities(path).lookup('app', 'web.views.*>')
    assert subject('loghog', facility) == 'loghog.app.web'


# the forward queue ------------------------------------------------------------

def test_the_queue_hands_out_in_order_and_replays_what_was_not_acknowledged(tmp_path: Path) -> None:
    queue = ForwardQueue(str(tmp_path), 10 ** 6)
    for number in range(10):
        assert queue.append('id-%d' % number, 'loghog.a.root', b'{"n":%d}' % number)
    queue.flush()
    entries = queue.take(4)
    assert [line for _end, line in entries] == [b'id-%d\tloghog.a.root\t{"n":%d}' % (n, n) for n in range(4)]
    queue.done(entries[1][0])
    assert queue.acked == 0  # the first is not acknowledged yet
    queue.done(entries[0][0])
    queue.close()
    again = ForwardQueue(str(tmp_path), 10 ** 6)
    assert [line.split(b'\t')[0] for _end, line in again.take(100)] == [b'id-%d' % n for n in range(2, 10)]


def test_the_queue_is_bounded_and_counts_pending_bytes(tmp_path: Path) -> None:
    queue = ForwardQueue(str(tmp_path), 100)
    assert queue.append('a', 's', b'x' * 80)
    assert not queue.append('b', 's', b'x' * 80)
    assert queue.pending_bytes == len(b'a\ts\t' + b'x' * 80 + b'\n')
    queue.flush()
    [(end, _line)] = queue.take(10)
    queue.done(end)
    assert queue.pending_bytes == 0 and queue.append('b', 's', b'x' * 80)


def test_a_record_cut_short_by_a_crash_is_removed(tmp_path: Path) -> None:
    queue = ForwardQueue(str(tmp_path), 10 ** 6)
    queue.append('a', 's', b'{}')
    queue.close()
    with open(tmp_path / QUEUE_NAME, 'ab') as stream:
        stream.write(b'b\ts\t{"cut')
    again = ForwardQueue(str(tmp_path), 10 ** 6)
    assert [line for _end, line in again.take(10)] == [b'a\ts\t{}']


def test_a_large_acknowledged_part_is_dropped_from_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr('loghogd.forwardqueue.COMPACT_BYTES', 1000)
    queue = ForwardQueue(str(tmp_path), 10 ** 6)
    for number in range(100):
        queue.append('id-%d' % number, 's', b'{"n":%d}' % number)
    queue.flush()
    for end, _line in queue.take(95):
        queue.done(end)
    queue.save()
    assert os.path.getsize(tmp_path / QUEUE_NAME) < 200
    queue.append('id-100', 's', b'{}')
    queue.close()
    again = ForwardQueue(str(tmp_path), 10 ** 6)
    assert [line.split(b'\t')[0] for _end, line in again.take(100)] == [b'id-%d' % n for n in range(95, 101)]


def test_a_file_that_is_no_queue_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / QUEUE_NAME).write_bytes(b'something else\n')
    queue = ForwardQueue(str(tmp_path), 10 ** 6)
    assert queue.take(10) == [] and (tmp_path / (QUEUE_NAME + '.unreadable')).exists()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=50).filter(lambda b: b'\n' not in b), max_size=30),
       st.integers(1, 7))
def test_every_entry_comes_out_once_in_order_in_batches(tmp_path_factory, payloads, batch) -> None:
    directory = tmp_path_factory.mktemp('queue')
    queue = ForwardQueue(str(directory), 10 ** 6)
    for index, payload in enumerate(payloads):
        queue.append('i%d' % index, 's', payload)
    queue.flush()
    seen = []
    for _ in range(math.ceil(len(payloads) / batch) + 1):
        for end, line in queue.take(batch):
            seen.append(line)
            queue.done(end)
    assert seen == [b'i%d\ts\t%s' % (index, payload) for index, payload in enumerate(payloads)]
    assert queue.pending_bytes == 0


def test_lines_the_disk_refuses_are_handed_back_and_nothing_half_written_stays(tmp_path: Path, monkeypatch) -> None:
    queue = ForwardQueue(str(tmp_path), 10 ** 6)
    queue.append('a', 's', b'{}')
    queue.flush()
    queue.append('b', 's', b'{"long":1}')
    monkeypatch.setattr(os, 'write', lambda fd, data: 3)
    assert queue.flush() == [b'b\ts\t{"long":1}\n']
    monkeypatch.undo()
    assert queue.refused is not None
    assert [line for _end, line in queue.take(10)] == [b'a\ts\t{}']
    queue.close()
    assert [line for _end, line in ForwardQueue(str(tmp_path), 10 ** 6).take(10)] == [b'a\ts\t{}']


@given(st.text(max_size=80))
def test_any_filter_text_parses_to_valid_filters_or_a_stated_error(raw: str) -> None:
    try:
        filters = parse_filters(raw)
    except ValueError as error:
        assert 'is not a subject filter' in str(error)
    else:
        for item in filters:
            assert item and ' ' not in item and ',' not in item
            assert '>' not in item[:-1]


@given(st.text(max_size=80))
def test_any_server_list_parses_to_urls_or_a_stated_error(raw: str) -> None:
    try:
        servers = parse_servers(raw)
    except ValueError as error:
        assert 'NATS server URL' in str(error)
    else:
        assert servers and all(server and not any(char.isspace() for char in server) for server in servers)
