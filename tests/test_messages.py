"""Version 1 payloads: the msgspec fast path proved equivalent to the json path on any input.

json (`messages.parse_json`) is the reference. For every payload,
`parse_message` (msgspec first, json for what msgspec does not take) must
return the same message, keys in the same order and values of the same
type, or raise Rejected with the same reason and text; and whatever the fast
paths alone accept (parse_flat, and decode_plain for the processor's plain
frames), json accepts with the same fields.
"""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog.protocol import encode_payload
from loghogd import messages
from loghogd.formats import escape_controls, json_may_hold_controls
from loghogd.messages import (MAX_NSECS, MAX_STAMP, NOT_PLAIN, Rejected, decode_plain, parse_flat,
                              parse_json, parse_message)
from tests.test_batch import json_values, mutate, texts
from tests.test_fuzz import HUGE_NUMBERS, good_messages, mistyped_messages, splice_junk, to_json

assert messages.msgspec is not None, 'the differential tests need msgspec installed'

FIELDS = ['version', 'app_id', 'module', 'stamp', 'nsecs', 'hostname', 'body', 'signature', 'client_id', 'seq']
INSERTS = ['\x01', '\x1f', '\x7f', '\\ud800', '\\udc00', '\\ud83d\\u0041', '\\ud83d\\ude00', '\udcff', '00', '-0',
           '01', '1e400', '-1e400', '1.0', 'NaN', '-Infinity', 'Infinity', '\ufeff', '9' * 30, '9' * 4300, '9' * 4301,
           '"', '\\', '\\u0000', ' ', '\t', '\x0c', ',', ':', '{', '}', '[', ']', '[' * 40, '{"a":1,"a":2}',
           '"stamp":1,', '"body":"x",', 'true', 'null', '\u2028', '\u202e']


def outcome(parse, payload: bytes):
    """What a parser made of `payload`, comparable across parsers (repr keeps 1 and True, NaN and NaN apart)."""
    try:
        message, app_id, module, hostname = parse(payload)
    except Rejected as rejected:
        return ('rejected', rejected.reason, str(rejected), rejected.app_id)
    return ('ok', [(key, type(value), repr(value)) for key, value in message.items()], app_id, module, hostname)


def plain_fields(payload: bytes):
    """The fields decode_plain gives a payload, by name; None where it does not take it."""
    try:
        plain = decode_plain(payload)
    except NOT_PLAIN:
        return None
    return {name: getattr(plain, name) for name in plain.__struct_fields__}


def assert_same_outcome(payload: bytes) -> None:
    expected = outcome(parse_json, payload)
    assert outcome(parse_message, payload) == expected
    if parse_flat(payload) is not None:
        assert outcome(parse_flat, payload) == expected
    plain = plain_fields(payload)
    if plain is not None:
        status, items, _app_id, _module, hostname = expected
        assert status == 'ok'
        message = {key: (kind, text) for key, kind, text in items}
        assert set(message) - {'hostname'} == set(plain) - {'hostname'}
        assert all(message[key] == (type(plain[key]), repr(plain[key])) for key in message)
        assert plain['hostname'] == hostname


def with_duplicates(message, repeats) -> bytes:
    """The message's JSON with some keys given again, later, with other values."""
    items = list(message.items()) + [(FIELDS[index % len(FIELDS)], value) for index, value in repeats]
    return ('{%s}' % ', '.join('%s: %s' % (json.dumps(key), json.dumps(value)) for key, value in items)).encode(
        'utf-8', 'surrogatepass')


messages_any = st.one_of(good_messages(), mistyped_messages())
flat_or_not = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE_NUMBERS), texts, json_values)


@given(messages_any, st.booleans())
@settings(max_examples=1000)
def test_generated_messages(message, ensure_ascii):
    assert_same_outcome(to_json(message, ensure_ascii))


@given(messages_any, st.lists(st.tuples(st.integers(0, 30), flat_or_not), max_size=4))
@settings(max_examples=500)
def test_duplicate_keys_keep_the_last_value_alike(message, repeats):
    assert_same_outcome(with_duplicates(message, repeats))


@given(messages_any, st.integers(min_value=0, max_value=400), st.sampled_from(INSERTS))
@settings(max_examples=1000)
def test_messages_with_text_inserted(message, position, insert):
    assert_same_outcome(mutate(json.dumps(message), position, insert))


@given(messages_any, st.booleans(), st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=8),
       st.one_of(st.just(b''), splice_junk))
@settings(max_examples=1000)
def test_messages_with_bytes_cut_and_inserted(message, ensure_ascii, position, cut, junk):
    payload = to_json(message, ensure_ascii)
    assert_same_outcome(payload[:position] + junk + payload[position + cut:])


@given(st.dictionaries(st.sampled_from(FIELDS) | texts, flat_or_not, max_size=8))
@settings(max_examples=500)
def test_objects_of_any_fields_and_values(message):
    assert_same_outcome(json.dumps(message, allow_nan=True).encode('utf-8', 'surrogatepass'))


@given(st.binary(max_size=300))
@settings(max_examples=1000)
def test_arbitrary_bytes(payload):
    assert_same_outcome(payload)


@given(messages_any, st.booleans(), st.integers(min_value=0, max_value=400), st.sampled_from(INSERTS))
@settings(max_examples=1000)
def test_only_a_payload_with_del_non_ascii_or_a_control_escape_holds_text_to_escape(message, ensure_ascii, position,
                                                                                    insert):
    """The processor skips escape_controls on the other payloads' bodies: their lines must not change."""
    for payload in (to_json(message, ensure_ascii), mutate(json.dumps(message), position, insert)):
        try:
            parsed = parse_message(payload)[0]
        except Rejected:
            continue
        if json_may_hold_controls(payload):
            continue
        for value in parsed.values():
            if type(value) is str:
                assert escape_controls(value) == value


def good(**fields) -> dict:
    return {'version': 1, 'app_id': 'app', 'module': 'root', 'stamp': 1, 'nsecs': 0, 'hostname': 'h', 'body': 'b',
            **fields}


@pytest.mark.parametrize('payload', [
    b'{"body": ' + b'[' * 100_000 + b']' * 100_000 + b'}',
    b'[' * 100_000 + b']' * 100_000,
    json.dumps(good(extra=json.loads('[' * 500 + ']' * 500))).encode(),
    json.dumps(good(seq=int('9' * 4300))).encode(),
    json.dumps(good(seq=-int('9' * 4300))).encode(),
    json.dumps(good(seq=int('9' * 4300))).encode().replace(b'9' * 4300, b'9' * 4301),
    json.dumps(good(stamp=2 ** 64)).encode(),
    json.dumps(good(stamp=MAX_STAMP, nsecs=MAX_NSECS)).encode(),
    json.dumps(good(nsecs=MAX_NSECS + 1)).encode(),
    json.dumps(good(stamp=1.0)).encode(),
    json.dumps(good(stamp=True)).encode(),
    json.dumps(good(seq=float('nan')), allow_nan=True).encode(),
    json.dumps(good(body='\ud800 lone')).encode(),
    json.dumps(good(body='\ud800 lone'), ensure_ascii=False).encode('utf-8', 'surrogatepass'),
    json.dumps(good(body='\x00\x1b[2J\u202e')).encode(),
    b'\xef\xbb\xbf' + json.dumps(good()).encode(),
    b' \t\r\n' + json.dumps(good()).encode() + b' \t\r\n',
    json.dumps(good()).encode('utf-16-be'),
    b' ' + json.dumps(good()).encode('utf-16-le'),
    json.dumps(good()).encode('utf-32'),
    json.dumps(good()).encode() + b' x',
    b'',
    b'"just a string"',
], ids=lambda payload: repr(payload[:30]))
def test_the_shapes_named_in_the_issue(payload):
    assert_same_outcome(payload)


def test_what_clients_send_takes_the_fast_path():
    plain = encode_payload('app', 'web.requests', 1_700_000_000, 123_000_000, 'web-1', 'GET "/" 200')
    signed = encode_payload('app', 'root', 1, 0, 'h', 'é\x1b', secret='k', client_id='c1', seq=7, caps='1.2')
    for payload in (plain, signed):
        assert parse_flat(payload) is not None
        assert outcome(parse_flat, payload) == outcome(parse_json, payload)
    assert plain_fields(plain) == {'version': 1, 'app_id': 'app', 'module': 'web.requests', 'stamp': 1_700_000_000,
                                   'nsecs': 123_000_000, 'body': 'GET "/" 200', 'hostname': 'web-1'}
    assert plain_fields(signed) is None


def test_without_msgspec_every_payload_takes_the_json_path():
    code = ("import sys; sys.modules['msgspec'] = None\n"
            "from loghogd import messages\n"
            "assert messages.parse_message is messages.parse_json and not hasattr(messages, 'parse_flat')\n"
            "assert messages.decode_plain is None\n"
            "print(messages.parse_message(sys.stdin.buffer.read())[1:])")
    payload = encode_payload('app', 'root', 1, 0, 'h', 'b')
    result = subprocess.run([sys.executable, '-c', code], input=payload, capture_output=True, check=True)
    assert result.stdout == b"('app', 'root', 'h')\n"
