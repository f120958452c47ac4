"""The syslog parser in-process: both RFCs, the deviations real senders make, and hostile bytes."""

import calendar
import time
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.record import Record, SyslogFields
from loghogd.syslog_parser import SyslogError, parse_runs, parse_syslog

RECEIVED = calendar.timegm((2026, 12, 1, 12, 0, 0))
PEER = '192.0.2.7'


def parse(data: bytes, received: float = RECEIVED) -> Record:
    return parse_syslog(data, received, PEER)


def local(*fields: int) -> float:
    return time.mktime(fields + (0, 0, -1))


def test_rfc5424_with_every_field():
    record = parse(b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 8710 ID47 '
                   b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][x@1 a="q\\"]"] '
                   b'\xef\xbb\xbfAn application event log entry...\n')
    assert record == Record(
        app_id='evntslog', module='ID47', host='mymachine.example.com',
        body='An application event log entry...', received=RECEIVED,
        sent=calendar.timegm((2003, 10, 11, 22, 14, 15)) + 0.003, pid=8710,
        syslog=SyslogFields(severity=5, facility=20, msgid='ID47', procid='8710',
                            structured_data='[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
                                            '[x@1 a="q\\"]"]'),
        peer=PEER)


def test_rfc5424_nil_fields_fall_back_to_root_and_the_peer():
    record = parse(b'<13>1 - - app - - - hello')
    assert (record.app_id, record.module, record.host, record.body, record.sent, record.pid) == (
        'app', 'root', PEER, 'hello', None, None)
    assert record.syslog == SyslogFields(5, 1)


def test_rfc5424_offset_timestamp_and_procid_that_is_not_a_number():
    record = parse(b'<14>1 2026-12-01T13:30:00.5+01:30 h app worker-3 - -')
    assert record.sent == calendar.timegm((2026, 12, 1, 12, 0, 0)) + 0.5
    assert (record.pid, record.syslog.procid, record.body) == (None, 'worker-3', '')


def test_rfc5424_without_structured_data_keeps_the_whole_message():
    assert parse(b'<14>1 - h app 1 m [not sd] text').body == '[not sd] text'
    assert parse(b'<14>1 - h app 1 m no sd at all').body == 'no sd at all'


def test_rfc3164_as_logger_sends_it():
    record = parse(b'<13>Dec  1 11:59:58 web1 myapp[4242]: the message: with colons\x00\n')
    assert (record.app_id, record.module, record.host, record.body, record.pid) == (
        'myapp', 'root', 'web1', 'the message: with colons', 4242)
    assert record.sent == local(2026, 12, 1, 11, 59, 58)
    assert record.syslog == SyslogFields(5, 1, None, '4242', None)


def test_rfc3164_without_a_year_takes_the_year_nearest_the_receive_time():
    january = local(2027, 1, 1, 0, 0, 5)
    assert parse(b'<13>Dec 31 23:59:59 h app: late', january).sent == local(2026, 12, 31, 23, 59, 59)
    assert parse(b'<13>Jan  1 00:00:01 h app: early', RECEIVED).sent == local(2027, 1, 1, 0, 0, 1)
    assert parse(b'<13>Dec  1 2019 10:00:00 h app: with year').sent == local(2019, 12, 1, 10, 0, 0)


def test_rfc3164_without_timestamp_or_hostname_as_python_syslog_handler_sends_it():
    record = parse(b'<14>shop: Order 42 paid\x00')
    assert (record.app_id, record.host, record.body, record.sent) == ('shop', PEER, 'Order 42 paid', None)
    assert parse(b'<14>\xef\xbb\xbfshop[7] plain').body == 'plain'


def test_rfc3164_with_an_rfc3339_timestamp_as_rsyslog_forwards_it():
    record = parse(b'<30>2026-12-01T12:00:00.250000+00:00 db1 postgres[99]: checkpoint')
    assert (record.app_id, record.host, record.pid, record.sent) == ('postgres', 'db1', 99, RECEIVED + 0.25)


def test_nginx_access_log_line():
    record = parse(b'<190>Dec  1 12:00:00 web1 nginx: 127.0.0.1 - - "GET / HTTP/1.1" 200')
    assert (record.app_id, record.host, record.body) == ('nginx', 'web1', '127.0.0.1 - - "GET / HTTP/1.1" 200')
    assert record.syslog.facility == 23 and record.syslog.severity == 6


def test_bytes_that_are_not_utf8_become_replacement_characters():
    assert parse(b'<13>app: caf\xe9').body == 'caf\ufffd'


@pytest.mark.parametrize('data', [b'', b'hello', b'<>x', b'<192>x', b'<1234>x', b'\n\x00'])
def test_a_message_without_a_valid_pri_is_refused(data):
    with pytest.raises(SyslogError) as raised:
        parse(data)
    assert raised.value.reason == 'bad_syslog'


pieces = st.sampled_from([
    '<13>', '<165>', '<999>', '1 ', '- ', '2003-10-11T22:14:15.003Z ', '2026-02-30T25:61:61+99:99 ', 'Dec  1 ',
    'Feb 29 ', '12:00:00 ', '2019 ', 'host ', 'app', '[12]', '[', ']', ': ', ' ', '[id a="b\\"]"]', '[id', '="',
    '\\', '"', '\ufeff', '\x00', '\n', '\r', 'é', '\udcff', '::1 ', ':', '9' * 12, 'ID47 '])
texts = st.lists(pieces, max_size=16).map(''.join).map(lambda text: text.encode('utf-8', 'surrogatepass'))


@given(st.one_of(texts, st.binary(max_size=300)), st.floats(0, 4e9))
@settings(max_examples=1500)
def test_any_bytes_give_a_record_or_a_syslog_error_and_nothing_else(data, received):
    try:
        record = parse_syslog(data, received, PEER)
    except SyslogError:
        return
    assert isinstance(record.app_id, str) and isinstance(record.body, str)
    assert record.module and record.host
    assert record.sent is None or isinstance(record.sent, float)
    assert 0 <= record.syslog.facility <= 23 and 0 <= record.syslog.severity <= 7
    assert record.pid is None or record.pid >= 0


def test_rfc5424_message_loses_the_one_space_rsyslog_puts_before_a_forwarded_bsd_message():
    assert parse(b'<14>1 - h app - - -  forwarded').body == 'forwarded'
    assert parse(b'<14>1 - h app - - - \xef\xbb\xbf  two').body == ' two'


stamp_pieces = st.sampled_from(['2026', '-', '12', '01', 'T', 't', ' ', '23', ':', '59', '60', '.', '5', '123456',
                                '1234567890', 'Z', 'z', '+', '01:30', '99:99', '0', '٣'])


formatted_stamps = st.builds(
    lambda numbers, fraction, zone: '%04d-%02d-%02dT%02d:%02d:%02d' % tuple(numbers) + fraction + zone,
    st.tuples(st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
              st.integers(0, 61)),
    st.sampled_from(['', '.5', '.123456', '.123456789', '.1234567890', '.', '.x', '.٣']),
    st.sampled_from(['Z', 'z', '+01:30', '-14:00', '-99:99', '+0130', '', 'ZZ', '+01:3']))


@given(st.one_of(st.lists(stamp_pieces, max_size=14).map(''.join), formatted_stamps))
@settings(max_examples=1500)
def test_the_cached_timestamp_path_agrees_with_the_full_rfc3339_pattern(stamp):
    from loghogd.syslog_parser import _RFC3339, _rfc3339_match_seconds, _rfc3339_seconds
    match = _RFC3339.fullmatch(stamp)
    assert _rfc3339_seconds(stamp) == (None if match is None else _rfc3339_match_seconds(match))


common_pieces = st.sampled_from([
    '<13>1 ', '<134>1 ', '<191>1 ', '<192>1 ', '<007>1 ', '<0>1 ', '<1000>1 ', '- ', '-', '2026-12-01T12:00:00.5Z ',
    'web-01.example.com ', 'app ', 'ID47 ', '4242 ', '[a@1 b="c"] ', '[a@1] ', '[', ']', ' ', '  ', '\ufeff', '\ufeff ',
    'é ', '\x1c', '\t', '\x00', '\n', '\r', 'text', ' text', '"', '\\', '\udcff', ':'])
header_fields = ['-', 'h', 'app', 'ID47', '4242', '2026-12-01T12:00:00.5Z', '[x]', '"', '<13>1'] * 4 + [
    'é', 'a\x1cb', '', 'a b', '\udcff']
common_shapes = st.builds(
    lambda pri, fields, data, rest: '<%s>1 %s %s' % (pri, ' '.join(fields), data) + rest,
    st.sampled_from(['13', '134', '191', '007', '0', '99'] * 3 + ['192', '200', '1000', '']),
    st.lists(st.sampled_from(header_fields), min_size=5, max_size=5) | st.lists(st.sampled_from(header_fields)),
    st.sampled_from(['-', '- ', '-  ', '- \ufeff', '- \ufeff ', '-\ufeff', '--', '[a@1 b="c"] ', '[a@1]']),
    st.lists(common_pieces, max_size=8).map(''.join))


def assert_runs_say_what_the_records_say(messages: List[bytes]) -> None:
    expected, failures = [], 0
    for data in messages:
        try:
            expected.append(parse(data))
        except SyslogError:
            failures += 1
    runs, errors = parse_runs(messages, RECEIVED, PEER)
    assert [(app_id, module, host, body) for app_id, module, host, bodies, _ in runs for body in bodies] == [
        (record.app_id, record.module, record.host, record.body) for record in expected]
    assert [record for *_, records in runs for record in records()] == expected
    assert len(errors) == failures and all(isinstance(error, SyslogError) for error in errors)
    assert all(bodies for _, _, _, bodies, _ in runs)
    assert all(before[:3] != after[:3] for before, after in zip(runs, runs[1:]))


def streams_of(messages: st.SearchStrategy) -> st.SearchStrategy:
    """Lists of messages where the same few come again and again, as from one sender."""
    return st.lists(messages.map(lambda text: text.encode('utf-8', 'surrogatepass')), min_size=1, max_size=4).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), max_size=12))


@given(streams_of(common_shapes))
@settings(max_examples=1500)
def test_the_runs_of_near_common_rfc5424_say_what_the_full_records_say(messages):
    assert_runs_say_what_the_records_say(messages)


@given(streams_of(st.one_of(st.lists(common_pieces, max_size=16), st.lists(pieces, max_size=16)).map(''.join))
       | st.lists(st.binary(max_size=120), max_size=6))
@settings(max_examples=1000)
def test_the_runs_of_any_bytes_say_what_the_full_records_say(messages):
    assert_runs_say_what_the_records_say(messages)


def test_the_common_rfc5424_shape_needs_no_full_parse(monkeypatch):
    monkeypatch.setattr('loghogd.syslog_parser.parse_syslog', None)
    runs, errors = parse_runs([
        b'<134>1 2026-12-01T12:00:00.123456Z web-01.example.com bench - - - GET /api 200',
        b'<134>1 2026-12-01T12:00:00.123457Z web-01.example.com bench - - - GET /api 404\n',
        b'<13>1 - - app 12 ID47 - \xef\xbb\xbf x\r\n',
        b'<191>1 - h - - - -'], RECEIVED, PEER)
    assert [run[:4] for run in runs] == [('bench', 'root', 'web-01.example.com', ['GET /api 200', 'GET /api 404']),
                                         ('app', 'ID47', PEER, ['x']), ('', 'root', 'h', [''])]
    assert errors == []
