"""Syslog through the processor in-process: routing, the classic line, and every message counted once."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.facilities import load_facilities
from loghogd.pipeline import LoopPass
from loghogd.processor import Processor
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.syslog_input import SyslogInput
from loghogd.writer import Writer
from tests.support.daemon import bodies, facilities_conf

MAX_SIZE = 8192
PREFIX = '2026-12-01 12:00:00.000000 - '
FACILITIES = facilities_conf({'app': {}, 'app:ID47': {}, 'shop': {}, 'signed': {'secret': 'sekrit'},
                               'perhost': {'file_per_host': 'yes'}, 'js': {'format': 'json'}})


class Harness:
    """A SyslogInput on a Processor and Writer writing into a temporary logdir."""

    def __init__(self, directory: str) -> None:
        self.logdir = os.path.join(directory, 'log')
        path = os.path.join(directory, 'facilities.conf')
        with open(path, 'w', encoding='utf-8') as stream:
            stream.write(FACILITIES)
        self.counters = Counters()
        reporter = RateLimitedReporter()
        self.writer = Writer(self.logdir, self.counters, reporter)
        processor = Processor(load_facilities(path), self.writer, self.counters, reporter, MAX_SIZE)
        self.loop_pass = LoopPass(processor, self.writer)
        self.input = SyslogInput(processor, self.counters, reporter, MAX_SIZE)

    def handled(self) -> int:
        return sum(self.counters.accepted_by_facility.values()) + sum(self.counters.rejected_by_reason.values())

    def stream(self, data: bytes, cuts=(), kind: str = 'tcp') -> None:
        framer = self.input.new_framer()
        start = 0
        for stop in sorted(set(cuts)) + [len(data)]:
            self.input.stream_data(framer, data[start:stop], kind, '192.0.2.7:514', '192.0.2.7', 1e9, PREFIX)
            start = stop
        self.input.stream_end(framer, kind, '192.0.2.7:514', '192.0.2.7', 1e9, PREFIX)
        self.loop_pass.finish(1e9, force=True)

    def lines(self, relative: str):
        try:
            with open(os.path.join(self.logdir, relative), encoding='utf-8') as stream:
                return stream.read().splitlines(keepends=True)
        except FileNotFoundError:
            return []

    def close(self) -> None:
        for logfile in self.writer.open_files():
            logfile.close()


@pytest.fixture
def harness(tmp_path):
    built = Harness(str(tmp_path))
    yield built
    built.close()


def test_routing_by_app_name_tag_msgid_and_host_in_the_classic_line(harness):
    harness.stream(b'<13>1 - web1 app - ID47 - to the ID47 facility\n'
                   b'<13>1 - web1 app - other - unknown module falls back\n'
                   b'<13>Dec  1 12:00:00 db1 shop[12]: from a tag\n'
                   b'<14>shop: no host, so the peer address\n'
                   b'<14>perhost: one file per host\n')
    assert bodies(harness.lines('app/ID47.log'), host='web1') == ['to the ID47 facility']
    assert bodies(harness.lines('app/root.log'), host='web1') == ['unknown module falls back']
    assert bodies(harness.lines('shop/root.log')) == ['from a tag', 'no host, so the peer address']
    assert [line.split(' - ')[1] for line in harness.lines('shop/root.log')] == ['db1', '192.0.2.7']
    assert harness.lines('shop/root.log')[0].startswith(PREFIX)
    assert harness.counters.accepted_by_facility == {'app:ID47': 1, 'app:root': 1, 'shop:root': 2,
                                                   'perhost:root': 1}


def test_unknown_apps_signed_facilities_and_non_syslog_are_rejected_and_counted(harness):
    harness.stream(b'<13>1 - h nosuchapp - - - x\n<13>1 - h signed - - - x\n<14>signed[1]: y\n'
                   b'GET / HTTP/1.1\r\n<13>1 - h - - - - no app name\n', kind='tls')
    assert harness.counters.rejected_by_reason == {'unknown_app': 2, 'unsigned': 2, 'bad_syslog': 1}
    assert harness.counters.rejected_by_app == {'signed': 2, 'nosuchapp': 1, '': 1}
    assert harness.counters.syslog_messages_by_listener == {'tls': 5}
    assert harness.lines('signed/root.log') == []


def test_a_run_of_messages_to_one_place_is_written_and_counted_message_by_message(harness):
    harness.stream(b''.join(b'<13>1 2026-12-01T12:00:0%dZ web1 app 7 - - line %d\n' % (n, n) for n in range(3))
                   + b'<13>1 - web1 signed - - - x\n' * 2 + b'<14>app: after\n')
    assert bodies(harness.lines('app/root.log')) == ['line 0', 'line 1', 'line 2', 'after']
    assert [line.split(' - ')[1] for line in harness.lines('app/root.log')] == ['web1'] * 3 + ['192.0.2.7']
    assert all(line.startswith(PREFIX) for line in harness.lines('app/root.log'))
    assert harness.counters.accepted_by_facility == {'app:root': 4}
    assert harness.counters.rejected_by_reason == {'unsigned': 2}


def test_a_run_keeps_each_record_for_other_formats_and_escapes_controls_in_the_classic_line(harness):
    harness.stream(b'<13>1 2026-12-01T12:00:00Z web1 js 7 - - one\n<13>1 2026-12-01T12:00:01Z web1 js 7 - - two\n'
                   b'<13>1 - web1 app - - - plain\n<13>1 - web1 app - - - bell\x07 esc\x1b[2J\n')
    records = [json.loads(line) for line in harness.lines('js/root.log')]
    assert [(record['message'], record['sent'][17:19]) for record in records] == [('one', '00'), ('two', '01')]
    assert [record['syslog']['procid'] for record in records] == ['7', '7']
    assert bodies(harness.lines('app/root.log')) == ['plain', 'bell\\x07 esc\\x1b[2J']


def test_oversize_messages_are_cut_written_and_counted_and_the_peer_goes_on(harness):
    big = b'<14>app: ' + b'x' * (2 * MAX_SIZE)
    harness.stream(big + b'\n%d ' % len(big) + big + b'<14>app: after\n', cuts=range(0, 5 * MAX_SIZE, 1000))
    harness.input.datagram(big, '192.0.2.7:1', '192.0.2.7', 1e9, PREFIX)
    harness.loop_pass.finish(1e9, force=True)
    written = bodies(harness.lines('app/root.log'))
    assert written == ['x' * (MAX_SIZE - 9)] * 2 + ['after', 'x' * (MAX_SIZE - 9)]
    assert harness.counters.syslog_truncated_by_listener == {'tcp': 2, 'udp': 1}


def test_an_octet_counted_message_cut_off_by_the_close_is_counted_as_truncated(harness):
    harness.stream(b'100 <14>app: only part')
    assert harness.counters.rejected_by_reason == {'truncated': 1}


syslog_lines = st.lists(st.sampled_from([
    b'<13>1 - web1 app - ID47 - five', b'<13>1 - - shop 12 - [a b="c"] sd', b'<14>shop: handler',
    b'<13>Dec  1 12:00:00 h app[1]: bsd', b'<13>1 - h signed - - - x', b'<14>nosuchapp: x', b'junk',
    b'<13>1 - h perhost - - - \xff\xfe', b'<13>1 - ../../etc perhost - - - path', b'<99999>x', b'']),
    max_size=20)


@given(syslog_lines, st.lists(st.booleans(), max_size=20), st.lists(st.integers(0, 2000), max_size=10),
       st.binary(max_size=50))
@settings(max_examples=200)
def test_every_message_of_any_stream_is_accepted_or_rejected_exactly_once(tmp_path_factory, lines, counted,
                                                                           cuts, junk):
    harness = Harness(str(tmp_path_factory.mktemp('syslog')))
    try:
        stream = b''.join(b'%d %s' % (len(line), line) if use_count else line + b'\n'
                          for line, use_count in zip(lines, counted + [False] * len(lines)))
        stream += junk
        framer = harness.input.new_framer()
        expected = len(framer.feed(stream)) + len(framer.finish()[0])
        harness.stream(stream, cuts)
        assert sum(harness.counters.syslog_messages_by_listener.values()) == expected
        cut_off = harness.counters.rejected_by_reason.get('truncated', 0)
        assert harness.handled() - cut_off == expected
        for logfile in harness.writer.open_files():
            assert os.path.realpath(logfile.path).startswith(os.path.realpath(harness.logdir) + os.sep)
    finally:
        harness.close()
