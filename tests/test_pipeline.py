"""The loop pass in-process (loghogd/pipeline.py): every line reaches its file inside a journaled pass.

A log file that cannot be written is made by a directory standing where
the file goes: every open fails (EISDIR) until the directory is removed,
which is what a disk that refuses writes for a while looks like to loghogd.
"""

import os
import time

from loghog.protocol import FLAG_ACK_REQUEST, encode_payload
from loghogd.acks import JOURNAL_NAME, AckJournal
from loghogd.facilities import load_facilities
from loghogd.pipeline import LoopPass
from loghogd.processor import Processor
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.wakeup import MAX_SLEEP, NEVER, seconds_until
from loghogd.writer import Writer
from tests.support.daemon import facilities_conf

PREFIX = '2026-01-01 00:00:00.000000 - '


class Daemon:
    """Processor, writer, journal and loop pass over a temporary directory, as the service builds them."""

    def __init__(self, directory, facilities=None) -> None:
        self.directory = directory
        self.logdir = os.path.join(directory, 'log')
        self.path = os.path.join(self.logdir, 'app', 'root.log')
        os.makedirs(os.path.join(directory, 'lib'), exist_ok=True)
        self.counters = Counters()
        reporter = RateLimitedReporter()
        self.writer = Writer(self.logdir, self.counters, reporter)
        self.processor = Processor(self.facilities(facilities or {'app': {}}), self.writer, self.counters,
                                   reporter, 64 * 1024)
        self.loop_pass = LoopPass(self.processor, self.writer)
        self.loop_pass.use_journal(AckJournal(os.path.join(directory, 'lib', JOURNAL_NAME), logdir=self.logdir))
        self.connection = object()

    def facilities(self, sections):
        path = os.path.join(self.directory, 'facilities.conf')
        with open(path, 'w', encoding='utf-8') as stream:
            stream.write(facilities_conf(sections))
        return load_facilities(path)

    def receive(self, seqs):
        """Acknowledged records of client `c` on one connection, then the end of the pass."""
        frames = [(FLAG_ACK_REQUEST, encode_payload('app', 'root', 1, 0, 'h', 'record %d' % seq, client_id='c',
                                                    seq=seq)) for seq in seqs]
        self.processor.process(frames, '127.0.0.1:1', time.time(), PREFIX, self.connection)
        return self.loop_pass.finish(time.time())

    def acknowledged(self) -> int:
        return self.loop_pass.acks.seq_to_ack('c')

    def on_disk(self):
        with open(self.path, encoding='utf-8') as stream:
            return [line[len(PREFIX):] for line in stream.read().splitlines()]


def refuse_writes(path) -> None:
    os.makedirs(path)


def allow_writes(path) -> None:
    os.rmdir(path)


def descriptors_on(path):
    fds = '/proc/self/fd'
    found = []
    for name in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, name)) == path:
                found.append(name)
        except OSError:
            continue
    return found


def test_a_pass_writes_journals_and_owes_the_connection_an_ack(tmp_path):
    daemon = Daemon(str(tmp_path))
    result = daemon.receive(range(1, 4))
    assert result.owed == {daemon.connection: 'c'} and not result.resend
    assert daemon.on_disk() == ['h - record 1', 'h - record 2', 'h - record 3']
    assert daemon.acknowledged() == 3
    assert daemon.loop_pass.finish(time.time()).owed == {}


def test_lines_held_at_the_last_pass_and_written_at_stop_are_not_written_again_after_a_restart(tmp_path):
    daemon = Daemon(str(tmp_path))
    refuse_writes(daemon.path)
    daemon.receive(range(1, 6))
    assert daemon.acknowledged() == 0
    allow_writes(daemon.path)
    daemon.loop_pass.close(time.time())
    assert daemon.on_disk() == ['h - record %d' % seq for seq in range(1, 6)]
    restarted = Daemon(str(tmp_path))
    restarted.receive(range(1, 6))  # the client resends what it had no ACK for
    restarted.loop_pass.close(time.time())
    assert restarted.on_disk() == ['h - record %d' % seq for seq in range(1, 6)]
    assert restarted.counters.duplicates_dropped == 5


def test_a_reload_keeps_the_lines_held_for_a_changed_facility_until_a_pass_writes_them(tmp_path):
    daemon = Daemon(str(tmp_path))
    refuse_writes(daemon.path)
    daemon.receive(range(1, 6))
    daemon.loop_pass.reload(daemon.facilities({'app': {'backup_count': '9'}}), time.time())
    allow_writes(daemon.path)
    daemon.receive(range(6, 8))
    assert daemon.on_disk() == ['h - record %d' % seq for seq in range(1, 8)]
    assert daemon.acknowledged() == 7
    assert daemon.counters.messages_dropped_unwritable == 0
    daemon.loop_pass.close(time.time())
    assert descriptors_on(daemon.path) == []


def test_the_loop_sleeps_until_the_earliest_due_time_and_at_most_an_hour():
    assert seconds_until([NEVER, 12.5, 3.0]) == 3.0
    assert seconds_until([NEVER, -2.0]) == 0.0
    assert seconds_until([NEVER]) == seconds_until([]) == MAX_SLEEP == 3600.0
