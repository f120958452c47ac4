"""The throughput harness works end to end at tiny N; no timing is asserted."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import probe, pyspy, report
from benchmarks.servers import find_rsyslogd
from benchmarks.workload import body, seq_marker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


HAVE_RSYSLOG = find_rsyslogd() is not None
SERVERS = ['loghogd', 'cookbook'] + (['rsyslog'] if HAVE_RSYSLOG else [])


@pytest.fixture(scope='module')
def harness_run(tmp_path_factory):
    """One harness run at tiny N over every server installed here: (stdout, results JSON)."""
    results_dir = str(tmp_path_factory.mktemp('results'))
    command = [sys.executable, '-m', 'benchmarks.harness', '--records', '2000', '--udp-records', '1000',
               '--cookbook-records', '500', '--repetitions', '1', '--loads',
               'tcp-c1,tcp-c4,ack-c1,format-rfc3339-c1,format-json-c1,batch-c1,batch-ack,batch-c1-stdlib',
               '--servers', ','.join(SERVERS), '--no-install', '--results-dir', results_dir]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [name] = [name for name in os.listdir(results_dir) if name.endswith('.json')]
    with open(os.path.join(results_dir, name)) as results:
        return done.stdout, json.load(results)


def assert_tcp_delivered_exactly(summary: dict, server: str) -> None:
    for load in ('tcp-c1', 'tcp-c4'):
        figures = summary[load][server]
        assert figures['delivered_pct'] == 100.0, (load, server, figures)
        assert figures['sequence_check'] == 'exact', (load, server, figures)
        assert figures['records_per_s'] > 0


def test_harness_prints_one_table_with_the_ceiling(harness_run):
    stdout, _ = harness_run
    assert 'records/s (pure-Python loop)' in stdout
    header = [line for line in stdout.splitlines() if line.startswith('load ')]
    assert len(header) == 1 and 'loghogd/ceiling' in header[0]


def test_loghogd_gets_every_record_over_tcp_and_in_ack_mode(harness_run):
    _, results = harness_run
    assert_tcp_delivered_exactly(results['summary'], 'loghogd')
    assert results['summary']['ack-c1']['loghogd']['delivered_pct'] == 100.0


def test_loghogd_gets_every_record_in_rfc3339_and_json_lines_and_the_cost_is_noted(harness_run):
    stdout, results = harness_run
    for load in ('format-rfc3339-c1', 'format-json-c1'):
        figures = results['summary'][load]['loghogd']
        assert figures['delivered_pct'] == 100.0, (load, figures)
        assert figures['sequence_check'] == 'exact', (load, figures)
        assert '%s costs loghogd' % load in stdout
        assert 'records/s of tcp-c1' in stdout


def test_loghogd_gets_every_record_of_batches_with_either_decoder(harness_run):
    for load in ('batch-c1', 'batch-ack', 'batch-c1-stdlib'):
        figures = harness_run[1]['summary'][load]['loghogd']
        assert figures['delivered_pct'] == 100.0 and figures['sequence_check'] == 'exact', (load, figures)


def test_app_e2e_logs_every_record_through_each_handler(tmp_path):
    """benchmarks/app_e2e.py at tiny N: every way's file holds each record once."""
    command = [sys.executable, '-m', 'benchmarks.app_e2e', '--records', '3000', '--processes', '1,2',
               '--repetitions', '1']
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(('LoghogHandler', 'SysLogHandler', 'File'))]
    assert len(rows) == 2 * (3 if HAVE_RSYSLOG else 2), done.stdout
    assert all(row.split()[-1] == 'exact' for row in rows), done.stdout


def test_cookbook_receiver_gets_every_record(harness_run):
    assert_tcp_delivered_exactly(harness_run[1]['summary'], 'cookbook')


@pytest.mark.skipif(not HAVE_RSYSLOG, reason='rsyslogd is not installed (benchmarks/run installs it)')
def test_rsyslog_gets_every_record(harness_run):
    assert_tcp_delivered_exactly(harness_run[1]['summary'], 'rsyslog')


def test_missing_and_duplicated_records_are_counted(tmp_path):
    output = tmp_path / 'out.log'
    lines = ['2026-01-01 00:00:00.000000 - host - %s\n' % body(seq) for seq in (0, 1, 1, 3)]
    output.write_text(''.join(lines) + 'a line from somewhere else\n')
    check = probe.check_sequence(str(output), 4)
    assert (check.missing, check.duplicated, check.foreign_lines) == (1, 1, 1)
    assert check.describe() == 'missing 1, duplicated 1, other lines 1'


def test_json_lines_are_checked_by_their_message(tmp_path):
    output = tmp_path / 'out.log'
    lines = [json.dumps({'time': 't', 'message': body(seq), 'peer': '127.0.0.1:1', 'seq': 9}) + '\n'
             for seq in (0, 2, 2)]
    output.write_text(''.join(lines) + '{"message": 5}\n[1]\nnot json %s\n' % body(1))
    check = probe.check_sequence(str(output), 3, json_lines=True)
    assert (check.missing, check.duplicated, check.foreign_lines) == (1, 1, 3)


def test_watcher_finds_the_last_record_inside_a_json_line(tmp_path):
    output = tmp_path / 'out.log'
    output.write_text(json.dumps({'message': body(0), 'peer': '127.0.0.1:1'}) + '\n')
    watcher = probe.OutputWatcher(str(output), 2, last_seqs=[1], json_lines=True)
    try:
        assert not watcher.poll()
        with open(str(output), 'a') as stream:
            stream.write(json.dumps({'message': body(1), 'peer': '127.0.0.1:1'}) + '\n')
        assert watcher.poll()
    finally:
        watcher.close()


def test_watcher_waits_for_the_last_record_of_every_connection(tmp_path):
    output = tmp_path / 'out.log'
    output.write_text('x %s\n' % body(0) + 'x %s\n' % body(2))
    watcher = probe.OutputWatcher(str(output), 2, last_seqs=[1, 2])
    try:
        assert not watcher.poll()
        with open(str(output), 'a') as stream:
            stream.write('x %s\n' % body(1))
        assert watcher.poll()
        assert watcher.lines == 3
    finally:
        watcher.close()
    assert body(7).encode().endswith(seq_marker(7)[:-1])


def test_profile_summary_ranks_self_and_inclusive_time():
    raw = ['<module> (loghogd:5);run (loghogd/server.py:10);loads (json/__init__.py:346) 30\n',
           '<module> (loghogd:5);run (loghogd/server.py:10) 10\n']
    profile = pyspy.summarize(raw)
    assert profile['samples'] == 40
    assert profile['self'][0] == ('loads (json/__init__.py)', 30)
    assert dict(profile['inclusive'])['run (loghogd/server.py)'] == 40


def test_stream_loss_is_flagged_but_udp_loss_is_not():
    runs = [{'load': 'tcp-c1', 'server': 'loghogd', 'repetition': 0,
             'figures': {'delivered_pct': 99.5, 'sequence_check': 'missing 5'}},
            {'load': 'tcp-c4', 'server': 'loghogd', 'repetition': 1, 'figures': {'delivered_pct': 100.0}},
            {'load': 'udp-c1', 'server': 'loghogd', 'repetition': 0, 'figures': {'delivered_pct': 90.0}}]
    losses = report.stream_losses(runs)
    assert [(run['load'], run['problem']) for run in losses] == [
        ('tcp-c1', '99.50% delivered, sequence check: missing 5')]


def test_cost_of_an_option_is_against_plain_tcp_at_the_same_connections():
    summary = {'tcp-c1': {'loghogd': {'records_per_s': 100000.0, 'cpu_per_million': 4.0}},
               'zlib-c1': {'loghogd': {'records_per_s': 50000.0, 'cpu_per_million': 8.0}},
               'format-json-c1': {'loghogd': {'records_per_s': 80000.0, 'cpu_per_million': 6.0}},
               'tls-c16': {'loghogd': {'records_per_s': 50000.0, 'cpu_per_million': 8.0}}}
    assert report.cost_notes(summary) == [
        'zlib-c1 costs loghogd +4.00 CPU s per 1M records (2.00x) and runs at 0.50x the records/s of tcp-c1',
        'format-json-c1 costs loghogd +2.00 CPU s per 1M records (1.50x) and runs at 0.80x the records/s of tcp-c1']


def test_no_cost_note_when_plain_tcp_used_no_measurable_cpu():
    summary = {'tcp-c1': {'loghogd': {'records_per_s': 100000.0, 'cpu_per_million': 0.0}},
               'signed-c1': {'loghogd': {'records_per_s': 50000.0, 'cpu_per_million': 5.0}}}
    assert report.cost_notes(summary) == []
