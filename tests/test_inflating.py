"""isal's inflate proved equivalent to zlib's on any payload (loghogd/inflating.py).

zlib (`loghog.protocol.inflate`) is the reference: for every payload and
limit, `loghogd.inflating.inflate` must return the same bytes, or reject it
for the same reason (the texts name each library's error and may differ).
"""

import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog.protocol import FrameError
from loghog.protocol import inflate as zlib_inflate
from loghogd import inflating
from loghogd.inflating import inflate, zlib_takes_header

assert inflating.isal_zlib is not None, 'the differential tests need isal installed'


def outcome(inflater, payload: bytes, max_size: int):
    try:
        return ('ok', inflater(payload, max_size))
    except FrameError as error:
        return ('rejected', error.reason)


def assert_same_outcome(payload: bytes, max_size: int = 64 * 1024) -> None:
    assert outcome(inflate, payload, max_size) == outcome(zlib_inflate, payload, max_size)


texts = st.one_of(st.binary(max_size=3000), st.text(max_size=1000).map(lambda text: text.encode('utf-8') * 20),
                  st.sampled_from([b'', b'\x00' * 100000, b'{"records": []}' * 2000]))


@st.composite
def streams(draw) -> bytes:
    """A zlib stream of any level, window and strategy, as a client might send one."""
    compressor = zlib.compressobj(draw(st.integers(0, 9)), zlib.DEFLATED, draw(st.integers(9, 15)),
                                  draw(st.integers(1, 9)), draw(st.sampled_from([zlib.Z_DEFAULT_STRATEGY,
                                                                                 zlib.Z_FILTERED,
                                                                                 zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE,
                                                                                 zlib.Z_FIXED])))
    return compressor.compress(draw(texts)) + compressor.flush()


limits = st.sampled_from([0, 1, 100, 4096, 64 * 1024, 1024 * 1024])


@given(streams(), limits)
@settings(max_examples=500)
def test_streams_inflate_alike(payload, max_size):
    assert_same_outcome(payload, max_size)


@given(streams(), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 7)), min_size=1, max_size=4))
@settings(max_examples=1000)
def test_streams_with_flipped_bits_inflate_or_fail_alike(payload, flips):
    """A flipped bit may land in the header, a block header, a code, the data or the Adler-32 check."""
    damaged = bytearray(payload)
    for position, bit in flips:
        damaged[position % len(damaged)] ^= 1 << bit
    assert_same_outcome(bytes(damaged))


@given(streams(), st.integers(0, 10 ** 6), st.integers(0, 40), st.binary(max_size=40))
@settings(max_examples=1000)
def test_streams_cut_spliced_or_with_trailing_bytes_inflate_or_fail_alike(payload, position, cut, junk):
    position %= len(payload) + 1
    assert_same_outcome(payload[:position] + junk + payload[position + cut:])
    assert_same_outcome(payload + junk)


@given(st.integers(0, 255), st.integers(0, 255), streams())
@settings(max_examples=1000)
def test_any_header_inflates_or_fails_alike(method, flags, payload):
    """Every header: other methods, window sizes zlib refuses (isal takes them), preset dictionaries."""
    assert_same_outcome(bytes([method, flags]) + payload[2:])


@given(st.binary(max_size=300))
@settings(max_examples=1000)
def test_arbitrary_bytes(payload):
    assert_same_outcome(payload)


@pytest.mark.parametrize('window_bits', [9, 12, 15])
def test_a_header_zlib_takes_is_one_isal_may_see(window_bits):
    payload = zlib.compressobj(6, zlib.DEFLATED, window_bits).compress(b'x') + b'\x03\x00'
    assert zlib_takes_header(payload)
    for refused in (bytes([0x88, 0x98]), bytes([0x78, 0xbb]), bytes([0x77, 0x9e]), bytes([0x78, 0x9d]), b'x'):
        assert not zlib_takes_header(refused + payload[2:])


def test_a_zip_bomb_stops_at_the_limit_with_either():
    bomb = zlib.compress(b'\x00' * (50 * 1024 * 1024), 9)
    assert outcome(inflate, bomb, 1024 * 1024) == ('rejected', 'oversized')


def test_without_isal_zlib_inflates():
    code = ("import sys; sys.modules['isal'] = None\n"
            "from loghog import protocol\n"
            "from loghogd import inflating\n"
            "assert inflating.inflate is protocol.inflate and inflating.INFLATER_NAME == 'zlib (stdlib)'\n")
    subprocess.run([sys.executable, '-c', code], check=True)
