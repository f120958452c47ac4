"""The client's side of protocol 1.2: the fields emit() keeps, negotiation, and batches within a server's limits.

The capture servers here (tests/test_handler.py) answer a connection that
asks for capabilities with the ones a test gives, as loghogd does, and
keep every byte, so each assertion is about what went on the wire.
"""

import json
import logging
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog.batch import (FLAG_BATCH, FLAG_SIGNED, decode_batch, encode_batch, encode_batch_arrays, fast_json_encoder,
                          mac_matches, split_mac)
from loghog.batcher import CUT_MARK, BatchEncoder, Limits, batch_limits
from loghog import fields as fields_module
from loghog.fields import (MAX_EXTRA_BYTES, STANDARD_ATTRIBUTES, from_spool, from_wire_array, full_body,
                           record_fields, spool_bytes, version1)
from loghog.protocol import FLAG_ZLIB, decode_datagram, inflate
from tests.support.daemon import wait_for
from tests.test_handler import Capture, logger_for

CAPS = {'batch': 1, 'max_message_size': 1048576, 'max_batch_records': 10000}


@pytest.fixture
def server12():
    server = Capture(caps=CAPS)
    yield server
    server.close()


def sent_flags(server: Capture):
    return [decode_datagram(frame, allowed_flags=0xff)[0] for frame in server.frames()]


def test_the_first_record_asks_and_the_rest_go_in_batches_with_their_structured_fields(server12, make_handler):
    handler = make_handler('shop', '127.0.0.1', server12.port)
    logger = logger_for(handler, 'shop.orders')
    logger.info('first')
    wait_for(lambda: handler.queued == 0, 10, 'the first acknowledgement')
    for number in range(300):
        logger.warning('order %d', number, extra={'order': number, 'tags': ['vip'], 'user': object()})
    try:
        raise ValueError('card')
    except ValueError:
        logger.exception('charge failed')
    logger.info('with stack', stack_info=True)
    wait_for(lambda: handler.queued == 0, 10, 'every record acknowledged')
    records = server12.records()
    assert [r['seq'] for r in records] == list(range(1, 304))
    assert records[0]['caps'] == 'batch' and 'batch' not in records[0]
    assert all(r.get('batch') for r in records[1:])
    assert sent_flags(server12)[1] & FLAG_BATCH and len(sent_flags(server12)) < 100
    order = records[1]
    assert (order['module'], order['body'], order['levelno'], order['levelname']) == (
        logger.name, 'order 0', logging.WARNING, 'WARNING')
    assert order['extra'] == {'order': 0, 'tags': ['vip']}  # the object is not JSON: left out
    assert order['thread'] == 'MainThread' and order['pid'] > 0
    assert abs(order['time_us'] / 1e6 - records[1]['time_us'] / 1e6) < 60
    failed = records[-2]
    assert failed['exception'].startswith('Traceback') and failed['exception'].endswith('ValueError: card')
    assert failed['body'] == 'charge failed'  # the traceback the formatter appended is the exception field
    assert records[-1]['stack'].startswith('Stack (most recent call last)')
    assert handler.dropped_total == 0 and handler.oversized_total == 0


def test_signed_and_compressed_batches_carry_a_sha256_mac_of_the_whole_batch(make_handler):
    server = Capture(caps=CAPS)
    try:
        handler = make_handler('shop', '127.0.0.1', server.port, secret='s3cret', compression=True)
        logger = logger_for(handler)
        for number in range(50):
            logger.info('signed %d', number)
            if number == 0:  # until the first ACK, records go as version 1 frames
                wait_for(lambda: handler.queued == 0, 10, 'the first acknowledgement')
        wait_for(lambda: handler.queued == 0, 10, 'every record acknowledged')
        assert [r['body'] for r in server.records()] == ['signed %d' % n for n in range(50)]
        batches = [frame for frame in server.frames() if decode_datagram(frame, allowed_flags=0xff)[0] & FLAG_BATCH]
        assert batches
        for frame in batches:
            flags, payload = decode_datagram(frame, allowed_flags=0xff)
            assert flags & FLAG_SIGNED and flags & FLAG_ZLIB
            data, mac = split_mac(inflate(payload), flags)
            assert mac_matches('s3cret', data, mac) and not mac_matches('other', data, mac)
    finally:
        server.close()


def test_batches_keep_to_the_server_s_limits_and_a_record_too_big_alone_is_cut(make_handler):
    server = Capture(caps={'batch': 1, 'max_message_size': 2048, 'max_batch_records': 5})
    try:
        handler = make_handler('shop', '127.0.0.1', server.port)
        logger = logger_for(handler)
        logger.info('asking')
        wait_for(lambda: handler.queued == 0, 10, 'the first acknowledgement')
        for number in range(40):
            logger.info('%d %s', number, 'x' * (5000 if number == 20 else 100))
        wait_for(lambda: handler.queued == 0, 10, 'every record acknowledged')
        records = server.records()
        assert [r['seq'] for r in records] == list(range(1, 42))
        for frame in server.frames()[1:]:
            flags, payload = decode_datagram(frame, allowed_flags=0xff)
            assert flags & FLAG_BATCH and len(payload) <= 2048
            assert len(decode_batch(payload)[0].records) <= 5
        cut = records[21]['body']
        assert cut.startswith('20 xxx') and cut.endswith(CUT_MARK % (cut_size(cut), 2048))
        assert handler.oversized_total == 1 and handler.dropped_total == 0
    finally:
        server.close()


def cut_size(body: str) -> int:
    return int(body.rsplit('the record was ', 1)[1].split(' ')[0])


@pytest.mark.parametrize('caps', [None, {'batch': 0}, {'batch': 1, 'max_message_size': 'big'}])
def test_a_server_that_does_not_say_batch_gets_version_1_frames(make_handler, caps):
    server = Capture(caps=caps)
    try:
        handler = make_handler('shop', '127.0.0.1', server.port)
        logger = logger_for(handler)
        for number in range(30):
            logger.info('v1 %d', number)
            if number == 0:
                wait_for(lambda: handler.queued == 0, 10, 'the first acknowledgement')
        wait_for(lambda: handler.queued == 0, 10, 'every record acknowledged')
        assert not any(flags & FLAG_BATCH for flags in sent_flags(server))
        assert [r['body'] for r in server.records()] == ['v1 %d' % n for n in range(30)]
    finally:
        server.close()


def test_acknowledged_false_never_asks_even_a_12_server(server12, make_handler):
    handler = make_handler('shop', '127.0.0.1', server12.port, acknowledged=False)
    logger_for(handler).info('plain')
    handler.close()
    assert [r.get('caps') for r in server12.wait_for_records(1)] == [None] and sent_flags(server12) == [0]


def test_server_limits_come_only_from_well_formed_capabilities():
    assert batch_limits({'batch': 1, 'max_message_size': 8192, 'max_batch_records': 50000}) == Limits(8192, 1000)
    for caps in (None, {}, {'batch': True, 'max_message_size': 8192, 'max_batch_records': 5},
                 {'batch': 1, 'max_message_size': 100, 'max_batch_records': 5},
                 {'batch': 1, 'max_message_size': 8192, 'max_batch_records': 0}):
        assert batch_limits(caps) is None


def make_record(message: str, extra=None, exc_info=None) -> logging.LogRecord:
    record = logging.LogRecord('app.part', logging.ERROR, __file__, 1, message, None, exc_info)
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


def raised(message: str):
    """The exc_info of a KeyError just caught, as a record logged in an except block holds it."""
    try:
        raise KeyError(message)
    except KeyError:
        return sys.exc_info()


def test_extra_keeps_json_values_and_leaves_out_the_rest():
    extra = {'ok': 'yes', 'n': 3, 'f': 1.5, 'b': True, 'none': None, 'nested': {'a': [1, {'b': 'c'}]},
             'nan': math.nan, 'big': 2 ** 70, 'obj': object(), 'deep': [[[[[[[[[[1]]]]]]]]]],
             'bad_key': {1: 'x'}, 'tuple': (1, 2)}
    fields, _ = record_fields(make_record('m', extra), 'm')
    assert fields[0][9] == {'ok': 'yes', 'n': 3, 'f': 1.5, 'b': True, 'none': None, 'nested': {'a': [1, {'b': 'c'}]},
                          'tuple': [1, 2]}
    assert len(record_fields(make_record('plain'), 'plain')[0][0]) == 9


def test_extra_is_bounded_in_size():
    extra = {'k%03d' % number: 'v' * 100 for number in range(200)}
    fields, size = record_fields(make_record('m', extra), 'm')
    assert 0 < len(fields[0][9]) < 200 and size < MAX_EXTRA_BYTES + 100
    assert sum(len(key) + len(value) + 6 for key, value in fields[0][9].items()) <= MAX_EXTRA_BYTES


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(message=st.text(), name=st.text(), extra=st.dictionaries(st.from_regex(r'[a-z][a-zA-Z0-9_]{0,10}', fullmatch=True).filter(
                                      lambda key: key not in STANDARD_ATTRIBUTES),
                                                                 json_values, max_size=4),
       with_exception=st.booleans())
def test_whatever_a_record_holds_the_server_decodes_its_batch_and_the_spool_gives_it_back(message, name, extra,
                                                                                           with_exception):
    record = make_record(message, extra, raised(message) if with_exception else None)
    record.name = name
    body = logging.Formatter().format(record)
    fields, _ = record_fields(record, body)
    frame = encode_batch('app', 'host', 'c1', 7, [fields[0]], secret='k')
    flags, payload = decode_datagram(frame, allowed_flags=0xff)
    data, mac = split_mac(payload, flags)
    batch, bad = decode_batch(data)
    assert bad == [] and mac_matches('k', data, mac)
    decoded = batch.records[0]
    assert full_body(from_wire_array(list(decoded))) == body.encode('utf-8', 'replace').decode('utf-8')
    assert (decoded.exception is not None) == with_exception
    back = from_spool(spool_bytes(fields))
    assert back == from_wire_array(list(decoded))
    assert BatchEncoder('app', 'host').frames('c1', [(1, fields)], Limits(1024, 5))


def holds_a_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(holds_a_float(item) for item in value)


extras = st.dictionaries(st.from_regex(r'[a-z][a-zA-Z0-9_]{0,10}', fullmatch=True).filter(
    lambda key: key not in STANDARD_ATTRIBUTES), json_values, max_size=4)


@pytest.mark.skipif(fast_json_encoder() is None, reason='msgspec is not installed')
@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.tuples(st.text(st.characters(exclude_categories=())), extras), min_size=1, max_size=5))
def test_msgspec_encodes_a_batch_as_the_stdlib_does(records):
    """The sender's msgspec path writes the stdlib's bytes; a float may be spelled otherwise, never valued."""
    arrays = [record_fields(make_record(body, extra), body)[0][0] for body, extra in records]
    fast = encode_batch_arrays('app', 'host', 'c1', 1, arrays, fast_json_encoder())
    stdlib = encode_batch_arrays('app', 'host', 'c1', 1, arrays)
    assert json.loads(fast) == json.loads(stdlib)
    if not holds_a_float(arrays):
        assert fast == stdlib
    assert decode_batch(fast)[1] == decode_batch(stdlib)[1] == []


def test_a_version_1_record_over_a_11_server_s_max_message_size_is_dropped_after_two_tries(make_handler, capsys):
    server = Capture(max_size=8192)
    try:
        handler = make_handler('shop', '127.0.0.1', server.port, flush_timeout=30.0)
        logger = logger_for(handler)
        logger.info('record 0 before')
        logger.info('huge ' + 'x' * 20000)
        for number in range(1, 6):
            logger.info('record %d after', number)
        handler.close()
        bodies = [r['body'] for r in server.records()]
        assert sorted(set(b for b in bodies if b.startswith('record'))) == ['record 0 before'] + [
            'record %d after' % n for n in range(1, 6)]
        assert (handler.oversized_total, handler.dropped_total, handler.queued) == (1, 1, 0)
        assert 'max_message_size' in capsys.readouterr().err
    finally:
        server.close()


class TracebackFirst(logging.Formatter):
    """A formatter that puts the traceback before the message."""

    def format(self, record):
        text = logging.Formatter.format(self, record)
        if record.exc_text:
            text = record.exc_text + ' | ' + text[:-len(record.exc_text) - 1]
        return text


@pytest.mark.parametrize('formatter', [logging.Formatter('%(levelname)s %(message)s'), TracebackFirst()])
def test_exception_and_stack_travel_apart_only_when_the_formatter_appends_them(formatter):
    try:
        raise ValueError('card')
    except ValueError:
        record = logging.LogRecord('app', logging.ERROR, __file__, 1, 'charge\nfailed', None, sys.exc_info(),
                                   sinfo='Stack (most recent call last):\n  here')
    body = formatter.format(record)
    fields, _ = record_fields(record, body)
    assert full_body(fields) == body
    if isinstance(formatter, TracebackFirst):
        assert fields[0][5] is None and fields[0][2] == body
    else:
        array = fields[0]
        assert array[2] == 'ERROR charge\nfailed' and array[5].startswith('Traceback') and array[6].endswith('here')


def test_a_lone_surrogate_leaves_the_msgspec_path_for_the_stdlib_s_question_mark():
    arrays = [['m', 1, 'x\ud800y']]
    assert encode_batch_arrays('app', 'host', None, None, arrays, fast_json_encoder()) == \
        encode_batch_arrays('app', 'host', None, None, arrays) == b'["lh1.2","app","host",null,null,[["m",1,"x?y"]]]'


KEEP = object()
odd_values = st.one_of(st.just(KEEP), st.just(KEEP), st.just(KEEP), st.none(), st.integers(), st.text(), st.floats(),
                       st.just(2 ** 70), st.just(True))


@settings(max_examples=500, deadline=None)
@given(message=st.text(), extra=extras, levelno=odd_values, levelname=odd_values, process=odd_values,
       thread=odd_values, name=odd_values, with_exception=st.booleans(), with_stack=st.booleans())
def test_the_quick_path_for_a_plain_record_gives_what_the_general_one_does(message, extra, levelno, levelname,
                                                                            process, thread, name, with_exception,
                                                                            with_stack):
    """record_fields takes a shortcut for the usual record: any record, whatever its attributes hold, gets
    the fields of the general path, a record array with no trailing null and a version 1 view that agrees."""
    record = make_record(message, extra, raised(message) if with_exception else None)
    record.stack_info = 'Stack (most recent call last):\n  here' if with_stack else None
    for attribute, value in (('levelno', levelno), ('levelname', levelname), ('process', process),
                             ('threadName', thread), ('name', name)):
        if value is not KEEP:
            setattr(record, attribute, value)
    body = logging.Formatter().format(record) if type(record.name) is str else message
    record.message = body
    fields, size = record_fields(record, body)
    assert (fields, size) == fields_module._any_record_fields(record.__dict__, body)
    array, nsecs = fields
    assert type(array) is tuple and 3 <= len(array) <= 10 and (len(array) == 3 or array[-1] is not None)
    assert version1(fields) == (str(record.name), int(record.created), int(record.msecs * 1000000), body)
    assert array[1] // 1000 == int(record.created) * 1000 + int(record.msecs)


def test_a_plain_record_takes_the_quick_path(monkeypatch):
    """So the test above compares two paths for plain records, not the general path with itself."""
    record = make_record('plain')
    record.message = 'plain'
    expected = record_fields(record, 'plain')
    monkeypatch.setattr(fields_module, '_any_record_fields', None)
    assert record_fields(record, 'plain') == expected


@settings(max_examples=500, deadline=None)
@given(time_ns=st.integers(min_value=946684800 * 10 ** 9, max_value=4102444800 * 10 ** 9), python_313=st.booleans())
def test_a_record_s_time_keeps_its_microseconds_within_the_millisecond_msecs_names(time_ns, python_313):
    """Python 3.11 floors msecs from the float `created`; 3.13 makes both from integer nanoseconds, so
    `created` may round to another millisecond (or second): then the milliseconds msecs names win, as
    they do in a version 1 frame."""
    record = make_record('m')
    if python_313:
        record.created, record.msecs = time_ns / 1e9, (time_ns % 10 ** 9) // 10 ** 6 + 0.0
    else:
        record.created = time_ns / 1e9
        record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
    array = record_fields(record, 'm')[0][0]
    assert array[1] // 1000 == int(record.created) * 1000 + int(record.msecs)
    if int((record.created - int(record.created)) * 1000) == int(record.msecs):
        assert abs(array[1] - record.created * 1e6) < 2


def test_a_record_s_time_has_microseconds():
    record = make_record('m')
    record.created, record.msecs = 1795496954.2093456, 209.0
    assert record_fields(record, 'm')[0][0][1] == 1795496954209345
