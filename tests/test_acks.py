"""The acknowledgement journal: what a crash at any point of a pass leaves behind."""

import os
import tempfile
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loghogd.ackmarks import ClientMark, add_to_ranges, client_owner, parse_ack_fields
from loghogd.acks import AckJournal
from loghogd.facilities import Facilities, Facility
from loghogd.logfile import LogFile
from loghogd.pipeline import LoopPass
from loghogd.processor import Processor
from loghogd.schedule import parse_rotate
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.writer import MAX_HELD_BYTES, Writer

FACILITY = Facility('app', 'root', parse_rotate('daily'), 3)


def queue(logfile, journal, client_id, seqs):
    for seq in seqs:
        logfile.pending.append('line %s %d\n' % (client_id, seq))
        journal.note(client_id, seq, logfile, 'app')


def loop_pass(journal, writer):
    """The loop pass of loghogd/pipeline.py over `writer`, journaled in `journal`."""
    passes = LoopPass(Processor(Facilities({}), writer, Counters(), RateLimitedReporter(), 1024), writer)
    passes.use_journal(journal)
    return passes


def committed_pass(journal, logfile, client_id, seqs):
    """One loop pass as the server runs it: intent, write, commit."""
    writer = Writer(os.path.dirname(logfile.path), Counters(), RateLimitedReporter())
    for seq in seqs:
        writer.queue(logfile, 'line %s %d\n' % (client_id, seq), time.time())
        journal.note(client_id, seq, logfile, 'app')
    loop_pass(journal, writer).finish(time.time(), force=True)


@pytest.fixture
def paths(tmp_path):
    return str(tmp_path / 'ack-journal'), str(tmp_path / 'root.log')


def test_committed_passes_survive_a_restart(paths):
    journal_path, log_path = paths
    journal = AckJournal(journal_path)
    logfile = LogFile(log_path, FACILITY)
    for first in (1, 11):
        committed_pass(journal, logfile, 'c', range(first, first + 10))
    journal.close()
    recovered = AckJournal(journal_path)
    assert recovered.seq_to_ack('c') == 20
    assert recovered.is_duplicate('c', 20) and not recovered.is_duplicate('c', 21)


@pytest.mark.parametrize('written', ['none', 'half', 'all'])
def test_an_uncommitted_pass_counts_only_if_its_write_finished(paths, written):
    journal_path, log_path = paths
    journal = AckJournal(journal_path)
    logfile = LogFile(log_path, FACILITY)
    committed_pass(journal, logfile, 'c', range(1, 6))
    queue(logfile, journal, 'c', range(6, 11))
    journal.write_intent()
    data = logfile.unwritten
    with open(log_path, 'ab') as stream:
        stream.write({'none': b'', 'half': data[:len(data) // 2], 'all': data}[written])
    recovered = AckJournal(journal_path)
    with open(log_path, encoding='utf-8') as stream:
        lines = stream.read().splitlines()
    if written == 'all':
        assert recovered.seq_to_ack('c') == 10 and len(lines) == 10
    else:
        assert len(lines) == 5, 'the partial write must be cut back to the last whole pass'
        assert [recovered.is_duplicate('c', seq) for seq in (5, 6, 10)] == [True, False, False]


def test_torn_intent_line_is_ignored(paths):
    journal_path, log_path = paths
    journal = AckJournal(journal_path)
    logfile = LogFile(log_path, FACILITY)
    committed_pass(journal, logfile, 'c', range(1, 4))
    journal.close()
    with open(journal_path, 'ab') as stream:
        stream.write(b'I {"time": 1, "fil')
    assert AckJournal(journal_path).seq_to_ack('c') == 3


def test_compaction_forgets_idle_clients(paths, tmp_path):
    journal_path, _ = paths
    now = [1000.0]
    journal = AckJournal(journal_path, clock=lambda: now[0])
    committed_pass(journal, LogFile(str(tmp_path / 'root.log'), FACILITY), 'old', [1])
    journal.close()
    now[0] += 8 * 86400
    assert AckJournal(journal_path, clock=lambda: now[0]).marks == {}
    assert os.path.getsize(journal_path) < 100


@given(st.lists(st.integers(min_value=1, max_value=3000), max_size=300))
def test_client_mark_handles_everything_up_to_the_highest_seq(seqs):
    mark = ClientMark()
    for seq in seqs:
        mark.add(seq)
    assert mark.gaps == set()
    assert all(mark.handled(seq) == (seq <= max(seqs)) for seq in range(1, 3002)) if seqs else mark.high == 0


def test_a_crash_between_two_files_leaves_exactly_the_unwritten_seqs_as_gaps(tmp_path):
    journal_path = str(tmp_path / 'ack-journal')
    journal = AckJournal(journal_path)
    written = LogFile(str(tmp_path / 'root.log'), FACILITY)
    cut_short = LogFile(str(tmp_path / 'web.log'), FACILITY)
    for seq in range(1, 11):
        logfile = cut_short if seq % 2 else written
        logfile.pending.append('line %d\n' % seq)
        journal.note('c', seq, logfile, 'app')
    journal.write_intent()
    written.write_pending()
    with open(cut_short.path, 'ab') as stream:
        stream.write(cut_short.unwritten[:7])
    recovered = AckJournal(journal_path)
    assert os.path.getsize(cut_short.path) == 0
    assert recovered.seq_to_ack('c') == 10
    assert [seq for seq in range(1, 12) if not recovered.is_duplicate('c', seq)] == [1, 3, 5, 7, 9, 11]
    committed_pass(recovered, LogFile(cut_short.path, FACILITY), 'c', (1, 3, 5))
    recovered.close()
    assert [seq for seq in range(1, 11) if not AckJournal(journal_path).is_duplicate('c', seq)] == [7, 9]


def test_many_client_ids_with_high_seqs_cost_no_gaps(tmp_path):
    journal = AckJournal(str(tmp_path / 'ack-journal'))
    logfile = LogFile(str(tmp_path / 'root.log'), FACILITY)
    for number in range(2000):
        journal.note('client-%d' % number, 10 ** 6 + number, logfile, 'app')
        journal.note('client-%d' % number, 2 * 10 ** 6, logfile, 'app')
    assert sum(len(mark.gaps) for mark in journal.marks.values()) == 0


@given(st.lists(st.integers(min_value=1, max_value=100), max_size=100))
def test_ranges_cover_exactly_the_seqs(seqs):
    ranges = []
    for seq in seqs:
        add_to_ranges(ranges, seq, seq)
    assert [seq for first, last in ranges for seq in range(first, last + 1)] == seqs


@pytest.mark.parametrize('message', [{}, {'client_id': 'x'}, {'client_id': '', 'seq': 1},
                                     {'client_id': 'a/b', 'seq': 1}, {'client_id': 'x' * 65, 'seq': 1},
                                     {'client_id': 'x', 'seq': 0}, {'client_id': 'x', 'seq': True},
                                     {'client_id': 'x', 'seq': 2 ** 64}, {'client_id': 5, 'seq': 1}])
def test_invalid_ack_fields(message):
    assert parse_ack_fields(message) == (None, None)


def test_valid_ack_fields():
    assert parse_ack_fields({'client_id': 'a-B_9', 'seq': 7}) == ('a-B_9', 7)


def failing_pass(journal, writer, logfile, client_id, seqs):
    """A pass whose write the disk refuses: /dev/full answers every write with ENOSPC."""
    for seq in seqs:
        writer.queue(logfile, 'line %s %d\n' % (client_id, seq), time.time())
        journal.note(client_id, seq, logfile, 'app')
    result = loop_pass(journal, writer).finish(time.time(), force=True)
    assert logfile.unwritten or logfile.drops
    return sorted(result.resend)


def test_records_a_full_disk_holds_are_neither_acknowledged_nor_journaled_as_written(tmp_path):
    journal_path = str(tmp_path / 'ack-journal')
    journal = AckJournal(journal_path)
    writer = Writer(str(tmp_path), Counters(), RateLimitedReporter())
    committed_pass(journal, LogFile(str(tmp_path / 'root.log'), FACILITY), 'c', range(1, 4))
    full = LogFile('/dev/full', FACILITY)
    assert failing_pass(journal, writer, full, 'c', range(4, 9)) == []
    assert journal.seq_to_ack('c') == 3 and journal.waiting_for_disk('c')
    assert journal.is_duplicate('c', 5)  # the held line is written when space returns: a resend must not be
    assert failing_pass(journal, writer, full, 'c', range(9, 11)) == []
    assert journal.seq_to_ack('c') == 3
    journal.close()
    recovered = AckJournal(journal_path)
    assert recovered.seq_to_ack('c') == 3
    assert [seq for seq in range(1, 12) if not recovered.is_duplicate('c', seq)] == list(range(4, 12))


def test_acknowledged_records_dropped_from_the_full_buffer_are_owed_until_resent(tmp_path):
    journal = AckJournal(str(tmp_path / 'ack-journal'))
    counters = Counters()
    writer = Writer(str(tmp_path), counters, RateLimitedReporter())
    full = LogFile('/dev/full', FACILITY)
    writer.queue(full, 'x' * (MAX_HELD_BYTES + 1) + '\n', time.time())
    assert failing_pass(journal, writer, full, 'c', range(1, 6)) == ['c']
    assert counters.messages_dropped_unwritable == 6
    assert journal.seq_to_ack('c') == 0 and journal.waiting_for_disk('c')
    assert not any(journal.is_duplicate('c', seq) for seq in range(1, 6))
    committed_pass(journal, LogFile(str(tmp_path / 'root.log'), FACILITY), 'c', range(1, 6))
    assert journal.seq_to_ack('c') == 5 and not journal.waiting_for_disk('c')


def test_owners_survive_a_restart_and_old_snapshots_bind_on_next_use(paths, tmp_path):
    journal_path, log_path = paths
    journal = AckJournal(journal_path)
    logfile = LogFile(log_path, FACILITY)
    queue(logfile, journal, 'c', [1])
    journal.marks['c'].owner = client_owner('app', 'sekrit')
    journal.write_intent()
    logfile.write_pending()
    journal.commit()
    journal.close()
    recovered = AckJournal(journal_path)
    assert recovered.may_use('c', client_owner('app', 'sekrit'))
    assert not recovered.may_use('c', 'app') and not recovered.may_use('c', client_owner('app', 'other'))
    recovered.close()
    with open(journal_path, 'wb') as stream:
        stream.write(b'S {"old":[7,[],%d]}\n' % int(time.time()))
    old = AckJournal(journal_path)
    assert old.may_use('old', 'app') and old.seq_to_ack('old') == 7
    committed_pass(old, logfile, 'old', [8])
    assert not old.may_use('old', 'other') and old.status(5)['ack_clients_by_app'] == {'app': 1}


def test_a_rejected_seq_is_acknowledged_on_its_connection_only(paths):
    journal_path, log_path = paths
    journal = AckJournal(journal_path)
    committed_pass(journal, LogFile(log_path, FACILITY), 'c', range(1, 4))
    forger, client = object(), object()
    journal.note_rejected(forger, 'c', 2 ** 62)
    assert journal.seq_to_ack('c', forger) == 2 ** 62
    assert journal.seq_to_ack('c', client) == journal.seq_to_ack('c') == 3
    assert not journal.is_duplicate('c', 4)
    journal.forget_connection(forger)
    assert journal.seq_to_ack('c', forger) == 3
    journal.close()
    assert AckJournal(journal_path).seq_to_ack('c') == 3


def test_a_full_table_evicts_only_ids_of_the_owner_that_holds_the_most(tmp_path):
    now = [1000.0]
    journal = AckJournal(str(tmp_path / 'ack-journal'), max_clients=100, clock=lambda: now[0])
    logfile = LogFile(str(tmp_path / 'root.log'), FACILITY)
    signed = client_owner('billing', 'sekrit')
    for number in range(10):
        journal.note('real-%d' % number, 1, logfile, signed)
    evicted = 0
    for number in range(1000):
        now[0] += 1
        evicted += journal.note('flood-%d' % number, 1, logfile, 'public')
    assert evicted == 1000 - journal.owners['public'] > 900
    assert all(journal.seq_to_ack('real-%d' % number) == 1 for number in range(10))
    assert len(journal.marks) <= 100 and journal.owners[signed] == 10
    assert journal.status(5)['ack_clients_by_app'] == {'billing': 10, 'public': len(journal.marks) - 10}
    assert list(journal.status(5)['ack_high_water']) == ['flood-%d' % number for number in range(999, 994, -1)]


@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.integers(1, 50))
def test_noting_a_fresh_run_at_once_is_noting_each_of_its_seqs(earlier, length):
    """The batch path notes a run of seqs in one call where none is handled yet."""
    with tempfile.TemporaryDirectory() as directory:
        one, each = (AckJournal(os.path.join(directory, name)) for name in ('one', 'each'))
        logfile = LogFile(os.path.join(directory, 'root.log'), FACILITY)
        for journal in (one, each):
            for seq in earlier:
                journal.note('c', seq, logfile, 'app')
        first = max(earlier) + 1
        assert one.takes_fresh_run('c', first, 'app') and not one.takes_fresh_run('c', first - 1, 'app')
        assert not one.takes_fresh_run('c', first, 'another app')
        one.note('c', first, logfile, 'app', first + length - 1)
        for seq in range(first, first + length):
            each.note('c', seq, logfile, 'app')
        assert one.marks['c'].high == each.marks['c'].high and one.marks['c'].gaps == each.marks['c'].gaps
        assert one._files == each._files
        assert [one.is_duplicate('c', seq) for seq in range(1, first + length + 2)] == \
            [each.is_duplicate('c', seq) for seq in range(1, first + length + 2)]
