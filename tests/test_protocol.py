"""The wire protocol, driven with bytes only (no sockets)."""

import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog.protocol import (
    FLAG_ACK, FLAG_ACK_REQUEST, FLAG_ZLIB, HEADER, FrameError, StreamDecoder, decode_ack, decode_datagram,
    encode_ack, encode_frame, encode_message, inflate, sign, signature_matches)

# Captured from the deployed 0.7 client (CLIENT-0.7.md): TCP frame and signature.
CAPTURED_TCP = bytes.fromhex(
    '0000009a000000007b2276657273696f6e223a20312c20226170705f6964223a202264656d6f222c20226d6f64756c65'
    '223a20227765622e7265717565737473222c20227374616d70223a20313739353439363935342c20226e73656373223a'
    '203230393030303030302c2022686f73746e616d65223a202277656231222c2022626f6479223a202268656c6c6f2077'
    '5c7530306636726c64205c7532363033227d')
CAPTURED_SIGNATURE = '62cc902bb35997da450351cf335ca130'

frames_strategy = st.lists(
    st.tuples(st.sampled_from([0, FLAG_ZLIB, FLAG_ACK_REQUEST]), st.binary(max_size=300)), max_size=20)


def test_encoder_matches_the_captured_07_frame():
    assert encode_message('demo', 'web.requests', 1795496954, 209000000, 'web1', 'hello wörld ☃') == CAPTURED_TCP


def test_signature_matches_the_captured_07_signature():
    assert sign('sekrit', 'demo', 'web.requests', 1795496956, 0, 'hello wörld ☃') == CAPTURED_SIGNATURE
    assert sign(b'sekrit', 'demo', 'web.requests', 1795496956, 0, 'hello wörld ☃') == CAPTURED_SIGNATURE
    assert signature_matches('sekrit', 'demo', 'web.requests', 1795496956, 0, 'hello wörld ☃', CAPTURED_SIGNATURE)
    assert not signature_matches('sekrit', 'demo', 'web.requests', 1795496956, 1, 'hello wörld ☃',
                                 CAPTURED_SIGNATURE)


def feed_in_pieces(stream: bytes, cuts: list) -> tuple:
    """(decoder, frames) after feeding `stream` cut at `cuts` (taken modulo its length)."""
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    decoder = StreamDecoder()
    decoded = []
    for start, stop in zip(points, points[1:]):
        decoded.extend(decoder.feed(stream[start:stop]))
    return decoder, decoded


@settings(max_examples=300)
@given(frames=frames_strategy, cuts=st.lists(st.integers(min_value=0, max_value=10000), max_size=30))
def test_any_split_of_any_frame_sequence_decodes_to_the_same_frames(frames, cuts):
    decoder, decoded = feed_in_pieces(b''.join(encode_frame(payload, flags) for flags, payload in frames), cuts)
    assert decoded == frames
    assert decoder.error is None
    assert decoder.pending_bytes == 0


@settings(max_examples=200)
@given(frames=frames_strategy, cuts=st.lists(st.integers(min_value=0, max_value=10000), max_size=30),
       bad_flags=st.booleans())
def test_any_split_of_frames_then_a_bad_header_gives_the_frames_then_the_error(frames, cuts, bad_flags):
    bad = HEADER.pack(8, 0x80000000) if bad_flags else HEADER.pack(0xFFFFFFFF, 0)
    stream = b''.join(encode_frame(payload, flags) for flags, payload in frames) + bad + b'x' * 20
    decoder, decoded = feed_in_pieces(stream, cuts)
    assert decoded == frames
    assert decoder.error.reason == ('reserved_flags' if bad_flags else 'oversized')
    assert decoder.pending_bytes == 0


def test_one_byte_at_a_time():
    frames = [(0, b'x' * 1000), (FLAG_ZLIB, b''), (0, b'{}')]
    stream = b''.join(encode_frame(p, f) for f, p in frames)
    decoder = StreamDecoder()
    decoded = [frame for i in range(len(stream)) for frame in decoder.feed(stream[i:i + 1])]
    assert decoded == frames


def test_oversized_header_is_refused_before_any_payload_is_buffered():
    decoder = StreamDecoder(max_size=8192)
    good = encode_frame(b'ok')
    frames = decoder.feed(good + HEADER.pack(0xFFFFFFFF, 0) + b'x' * 100)
    assert frames == [(0, b'ok')]
    assert decoder.error.reason == 'oversized'
    assert decoder.pending_bytes == 0
    assert decoder.feed(encode_frame(b'later')) == []


def test_frame_at_the_limit_passes_and_one_byte_more_fails():
    assert StreamDecoder(max_size=100).feed(encode_frame(b'x' * 100)) == [(0, b'x' * 100)]
    decoder = StreamDecoder(max_size=100)
    assert decoder.feed(encode_frame(b'x' * 101)) == []
    assert decoder.error.reason == 'oversized'


@pytest.mark.parametrize('flags', [0x08, 0x80000000, FLAG_ACK])
def test_reserved_flags_are_refused(flags):
    decoder = StreamDecoder()
    decoder.feed(encode_frame(b'{}', flags))
    assert decoder.error.reason == 'reserved_flags'


def test_truncated_frame_stays_pending():
    decoder = StreamDecoder()
    assert decoder.feed(encode_frame(b'abcdef')[:-2]) == []
    assert decoder.pending_bytes == 12


def test_datagram_must_hold_exactly_one_frame():
    assert decode_datagram(encode_frame(b'abc', FLAG_ZLIB)) == (FLAG_ZLIB, b'abc')
    for data, reason in ((b'\x00' * 7, 'truncated'), (encode_frame(b'abc') + b'x', 'bad_length'),
                         (encode_frame(b'abc')[:-1], 'bad_length'), (encode_frame(b'a', 0x10), 'reserved_flags')):
        with pytest.raises(FrameError) as raised:
            decode_datagram(data)
        assert raised.value.reason == reason


@given(st.binary(max_size=64))
def test_datagram_decoder_raises_only_frame_errors(data):
    try:
        decode_datagram(data)
    except FrameError:
        pass


def test_inflate_stops_a_zip_bomb_at_the_limit():
    bomb = zlib.compress(b'\x00' * (50 * 1024 * 1024), 9)
    assert len(bomb) < 100 * 1024
    with pytest.raises(FrameError) as raised:
        inflate(bomb, 1024 * 1024)
    assert raised.value.reason == 'oversized'


@pytest.mark.parametrize('payload', [b'not zlib', zlib.compress(b'{"a": 1}')[:-3]])
def test_inflate_refuses_bad_zlib(payload):
    with pytest.raises(FrameError) as raised:
        inflate(payload)
    assert raised.value.reason == 'bad_zlib'


def test_compressed_message_round_trips():
    frame = encode_message('demo', 'root', 1, 2, 'h', 'body ☃', compress=True)
    [(flags, payload)] = StreamDecoder().feed(frame)
    assert flags == FLAG_ZLIB
    assert payload[:2] == b'\x78\x9c'
    assert json.loads(inflate(payload))['body'] == 'body ☃'


def test_ack_request_and_ack_frames():
    frame = encode_message('demo', 'root', 1, 2, 'h', 'b', client_id='abc', seq=7)
    [(flags, payload)] = StreamDecoder().feed(frame)
    assert flags == FLAG_ACK_REQUEST
    assert json.loads(payload)['seq'] == 7
    [(flags, payload)] = StreamDecoder(allowed_flags=FLAG_ACK).feed(encode_ack(2 ** 40))
    assert flags == FLAG_ACK and decode_ack(payload) == 2 ** 40
