"""The syslog stream framer (RFC 6587) in-process: any split, both framings, bounded buffers."""

from typing import List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.syslog_framer import MAX_LENGTH_DIGITS, SyslogFramer

MAX_SIZE = 64


def frame_all(stream: bytes, cuts: List[int], max_size: int = MAX_SIZE) -> Tuple[list, int, int]:
    """Feed `stream` cut at `cuts`; return the messages, the bytes cut off at the end and the most ever held."""
    framer = SyslogFramer(max_size)
    messages = []
    held = 0
    start = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        messages += framer.feed(stream[start:cut])
        held = max(held, framer.pending_bytes)
        start = cut
    last, cut_off = framer.finish()
    return messages + last, cut_off, held


def octet_counted(message: bytes) -> bytes:
    return b'%d %s' % (len(message), message)


def lf_terminated(message: bytes) -> bytes:
    return message + b'\n'


messages_without_lf = st.binary(max_size=3 * MAX_SIZE).map(lambda data: b'<13>' + data.replace(b'\n', b' '))


@given(st.lists(st.tuples(messages_without_lf, st.booleans()), max_size=12), st.data())
@settings(max_examples=300)
def test_any_split_of_a_mixed_stream_gives_every_message_once_cut_to_the_limit(items, data):
    stream = b''.join(octet_counted(m) if counted else lf_terminated(m) for m, counted in items)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    messages, cut_off, held = frame_all(stream, cuts)
    assert messages == [(m[:MAX_SIZE], len(m) > MAX_SIZE) for m, _ in items]
    assert cut_off == 0
    assert held <= MAX_SIZE + MAX_LENGTH_DIGITS + 1


@given(st.binary(max_size=400), st.data())
@settings(max_examples=600)
def test_any_split_of_any_bytes_gives_the_same_messages_as_one_read(stream, data):
    whole = frame_all(stream, [])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    split = frame_all(stream, cuts)
    assert split[:2] == whole[:2]
    assert split[2] <= MAX_SIZE + MAX_LENGTH_DIGITS + 1
    for message, truncated in whole[0]:
        assert len(message) <= MAX_SIZE
        assert truncated or len(message) < MAX_SIZE or b'\n' not in message


def test_one_byte_at_a_time_and_a_last_message_without_lf():
    stream = b'<13>first\n11 <13>second\n<13>third\r\n\n14 <13>multi\nline<13>last'
    messages, cut_off, _held = frame_all(stream, list(range(len(stream))))
    assert [m for m, _ in messages] == [b'<13>first', b'<13>second\n', b'<13>third\r', b'<13>multi\nline',
                                         b'<13>last']
    assert cut_off == 0


def test_oversize_messages_are_cut_flagged_and_the_rest_skipped_in_both_framings():
    big = b'<13>' + b'x' * 200
    stream = octet_counted(big) + lf_terminated(big) + b'<13>after\n'
    messages, _, held = frame_all(stream, list(range(0, len(stream), 7)))
    assert messages == [(big[:MAX_SIZE], True), (big[:MAX_SIZE], True), (b'<13>after', False)]
    assert held <= MAX_SIZE + MAX_LENGTH_DIGITS + 1


def test_a_huge_octet_count_is_skipped_without_buffering_it():
    framer = SyslogFramer(MAX_SIZE)
    assert framer.feed(b'9999999999 <13>') == []
    messages = framer.feed(b'y' * 100)
    assert messages == [(b'<13>' + b'y' * (MAX_SIZE - 4), True)]
    for _ in range(100):
        assert framer.feed(b'z' * 1000) == []
        assert framer.pending_bytes == 0


def test_an_octet_counted_message_cut_off_by_the_close_is_reported_not_delivered():
    framer = SyslogFramer(MAX_SIZE)
    assert framer.feed(b'20 <13>only part') == []
    assert framer.finish() == ([], 16)


def test_digits_without_a_space_are_an_lf_terminated_message():
    assert frame_all(b'123abc\n12345678901 x\n', [])[0] == [(b'123abc', False), (b'12345678901 x', False)]
