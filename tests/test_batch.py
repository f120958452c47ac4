"""Protocol 1.2 batches: the documented test vectors, round trips, and the
msgspec decoder proved equivalent to the stdlib one on any input."""

import json
import os
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loghog import batch
from loghog.protocol import HEADER, HEADER_SIZE, FLAG_ACK, FLAG_ZLIB, inflate
from loghogd import batchdecode

assert batchdecode.msgspec is not None, 'the differential tests need msgspec installed'

VECTORS = os.path.join(os.path.dirname(__file__), 'vectors', 'protocol-1.2.json')


def load_vectors():
    with open(VECTORS) as stream:
        return json.load(stream)


def unframe(frame: bytes):
    length, flags = HEADER.unpack_from(frame)
    assert length == len(frame) - HEADER_SIZE
    payload = frame[HEADER_SIZE:]
    if flags & FLAG_ZLIB:
        payload = inflate(payload)
    return flags, payload


@pytest.mark.parametrize('vector', load_vectors()['batches'], ids=lambda vector: vector['name'])
def test_vector_frames_are_what_the_encoder_makes_and_decode_back(vector):
    kwargs = {key: vector.get(key) for key in ('app_id', 'hostname', 'client_id', 'first_seq', 'records',
                                               'secret', 'compress')}
    kwargs['compress'] = bool(kwargs['compress'])
    frame = batch.encode_batch(**kwargs)
    assert frame.hex() == vector['frame_hex']
    flags, payload = unframe(bytes.fromhex(vector['frame_hex']))
    assert flags & batch.FLAG_BATCH
    assert bool(flags & batch.FLAG_ACK_REQUEST) == (vector['client_id'] is not None)
    data, mac = batch.split_mac(payload, flags)
    if vector.get('secret'):
        assert batch.mac_matches(vector['secret'], data, mac)
        assert not batch.mac_matches('other', data, mac)
    else:
        assert mac is None
    for decode in (batch.decode_batch, batchdecode.decode):
        decoded, bad = decode(data)
        assert bad == []
        assert (decoded.app_id, decoded.hostname, decoded.client_id, decoded.first_seq) == (
            vector['app_id'], vector['hostname'], vector['client_id'], vector['first_seq'])
        assert [list(record)[:len(expected)] for record, expected in zip(fields(decoded).records, vector['records'])] \
            == vector['records']


def test_caps_ack_vector():
    vector = load_vectors()['caps_ack']
    frame = bytes.fromhex(vector['frame_hex'])
    assert frame == batch.encode_caps_ack(vector['seq'], vector['capabilities'])
    length, flags = HEADER.unpack_from(frame)
    assert flags == FLAG_ACK | batch.FLAG_CAPS
    assert batch.decode_caps_ack(frame[HEADER_SIZE:]) == (vector['seq'], vector['capabilities'])


def test_signature_covers_the_hostname():
    frame = batch.encode_batch('shop', 'web1', None, None, [('root', 1, 'hello')], secret='k')
    flags, payload = unframe(frame)
    data, mac = batch.split_mac(payload, flags)
    forged = data.replace(b'"web1"', b'"web2"')
    assert forged != data
    assert batch.mac_matches('k', data, mac)
    assert not batch.mac_matches('k', forged, mac)


def test_one_bad_record_costs_only_itself():
    data = json.dumps(['lh1.2', 'shop', 'h', 'c', 5, [['root', 1, 'ok'], ['root', 'x', 'bad'], ['root', 3, 'ok']]])
    for decode in (batch.decode_batch, batchdecode.decode):
        decoded, bad = decode(data.encode())
        assert [index for index, _ in bad] == [1]
        assert [record and record.body for record in decoded.records] == ['ok', None, 'ok']


@pytest.mark.parametrize('record, bad', [
    (r'["m",1,"x\ud800"]', True),
    (r'["m",1,"x\uDC00y"]', True),
    (r'["m",1,"x\\ud800"]', False),  # an escaped backslash, then text: no surrogate
    (r'["m",1,"x",9223372036854775808]', True),
    (r'["m",1,"x",null,null,null,null,-9223372036854775809]', True),
    (r'["m",1,"x",null,null,null,null,null,"\udbff"]', True),
    (r'["m",1,"x",null,null,null,null,null,null,{"k":1e999}]', True),
    (r'["m",1,"x",20,"INFO",null,null,1234,"MainThread",{"k":[1,{"a":"b"}]}]', False),
])
def test_values_only_a_walk_finds_are_bad_records_for_both_decoders(record, bad):
    data = ('["lh1.2","a","h",null,null,[%s,["m",2,"fine"]]]' % record).encode()
    for decode in (batch.decode_batch, batchdecode.decode):
        decoded, bad_records = decode(data)
        assert [index for index, _ in bad_records] == ([0] if bad else [])
        assert decoded.records[1].body == 'fine'


texts = st.text(max_size=12)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                        st.floats(allow_nan=True, allow_infinity=True), texts)
json_values = st.recursive(json_leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(texts, inner, max_size=3)),
                           max_leaves=20)
record_arrays = st.lists(json_values, min_size=0, max_size=11) | st.tuples(
    texts, st.integers(min_value=-2 ** 64, max_value=2 ** 64), texts, json_values, json_values, json_values,
    json_values, json_values, json_values, json_values).map(list).flatmap(
        lambda fields: st.integers(min_value=2, max_value=10).map(lambda n: fields[:n]))
documents = st.tuples(st.sampled_from(['lh1.2', 'lh1.3']), json_values | texts, json_values | texts,
                      st.none() | texts | json_values, st.none() | st.integers(min_value=-5, max_value=2 ** 64),
                      st.lists(record_arrays, max_size=4)).map(list)


def fields(decoded):
    """A decoded batch as plain values, whichever decoder made its records."""
    records = [record and tuple(getattr(record, name) for name in batch.RECORD_FIELDS)
               for record in decoded.records]
    return decoded._replace(records=records)


def outcome(decode, data):
    try:
        decoded, bad = decode(data)
    except batch.BatchError as error:
        return ('error', error.reason)
    return ('ok', fields(decoded), [index for index, _ in bad])


def mutate(text: str, cut: int, insert: str) -> bytes:
    return (text[:cut] + insert + text[cut:]).encode('utf-8', 'surrogatepass')


@given(documents)
def test_msgspec_and_stdlib_agree_on_generated_batches(document):
    text = json.dumps(document, allow_nan=True)
    data = text.encode('utf-8', 'surrogatepass')
    assert outcome(batchdecode.decode, data) == outcome(batch.decode_batch, data)
    fast = batchdecode._fast(data)
    if fast is not None:
        assert outcome(batch.decode_batch, data) == ('ok', fields(fast), [])


@given(documents, st.integers(min_value=0, max_value=400),
       st.sampled_from(['\x01', '\\ud800', '"', '0', '00', '1e999', 'NaN', '-Infinity', '\ufeff', ',', ']', '[',
                        '{"a":1,"a":2}', '9' * 30, '\\', '\u2028', ' ', 'true']))
def test_msgspec_and_stdlib_agree_on_mutated_batches(document, cut, insert):
    data = mutate(json.dumps(document), cut, insert)
    assert outcome(batchdecode.decode, data) == outcome(batch.decode_batch, data)


@given(st.binary(max_size=200))
def test_msgspec_and_stdlib_agree_on_any_bytes(data):
    assert outcome(batchdecode.decode, data) == outcome(batch.decode_batch, data)


def test_deep_nesting_and_invalid_utf8_are_rejected_alike():
    deep = '[' * 5000 + ']' * 5000
    for text in (json.dumps(['lh1.2', 'a', 'h', None, None, [['m', 1, 'b', None, None, None, None, None, None,
                                                               {'x': json.loads('[' * 20 + ']' * 20)}]]]),
                 '["lh1.2","a","h",null,null,[["m",1,"b",null,null,null,null,null,null,{"x":%s}]]]' % deep):
        first = outcome(batch.decode_batch, text.encode())
        assert first == outcome(batchdecode.decode, text.encode())
        assert first[0] == 'error' or first[2] == [0]
    invalid = b'["lh1.2","a","h",null,null,[["m",1,"\xff"]]]'
    assert outcome(batch.decode_batch, invalid) == outcome(batchdecode.decode, invalid) == ('error', 'bad_json')


@given(st.lists(st.tuples(texts, st.integers(min_value=0, max_value=batch.MAX_TIME_US), texts,
                          st.none() | st.integers(min_value=0, max_value=50), st.none() | texts), max_size=5),
       st.booleans(), st.booleans())
def test_round_trip(records, signed, compressed):
    secret = 'k' if signed else None
    frame = batch.encode_batch('app', 'host', 'cid', 1, records, secret=secret, compress=compressed)
    flags, payload = unframe(frame)
    data, mac = batch.split_mac(payload, flags)
    assert (mac is not None) == signed
    decoded, bad = batchdecode.decode(data)
    assert bad == []
    assert [record[:5] for record in fields(decoded).records] == [tuple(record) for record in records]


def test_compression_is_per_batch():
    records = [('root', index, 'the same body again') for index in range(100)]
    frame = batch.encode_batch('app', 'host', None, None, records, compress=True)
    plain = batch.encode_batch('app', 'host', None, None, records)
    assert len(frame) < len(plain) / 4
    assert zlib.decompress(frame[HEADER_SIZE:]) == plain[HEADER_SIZE:]
