"""The client keeps records through server outages (issue 19): failover, the disk spool, oversized records.

Real loghogd processes on ephemeral ports, real application processes
killed with SIGKILL, real spool files in a temp dir.
"""

import collections
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from typing import Dict

import pytest

from tests.e2e.test_client import free_port, on_port
from tests.e2e.test_exactly_once import read_stats_file
from tests.support.daemon import REPO, Loghogd, facilities_conf, wait_for
from tests.test_handler import logger_for

FACILITIES = facilities_conf({'demo': {'rotate': 'size', 'max_size': '10G'}})
LOG_FILE = 'demo/root.log'


def server_in(directory, port: int) -> Loghogd:
    os.makedirs(str(directory))
    return Loghogd(directory, FACILITIES, config=on_port(port))


def numbers(daemon: Loghogd, word: str = 'record') -> Dict[int, int]:
    """How often each 'record N' is in the daemon's file."""
    counts: Dict[int, int] = collections.Counter()
    if os.path.exists(daemon.path(LOG_FILE)):
        for line in daemon.read_lines(LOG_FILE):
            body = line.rstrip('\n').split(' - ', 2)[2].split()
            if body[0] == word:
                counts[int(body[1])] += 1
    return counts


@pytest.mark.slow
def test_failover_to_a_second_server_and_back_lands_every_record(tmp_path, make_handler, capsys):
    total, rate = 10000, 2000
    first_port, second_port = free_port(), free_port()
    first = server_in(tmp_path / 'first', first_port).start()
    second = server_in(tmp_path / 'second', second_port).start()
    try:
        handler = make_handler('demo', host='127.0.0.1:%d,127.0.0.1:%d' % (first_port, second_port),
                               primary_retry_seconds=1.0, flush_timeout=60.0)
        logger = logger_for(handler)
        started = time.monotonic()
        for number in range(total):
            ahead = started + number / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if number == total * 3 // 10:
                first.stop(signal.SIGKILL)
            if number == total * 7 // 10:
                assert handler.current_server == ('127.0.0.1', second_port)
                first.start()
            logger.info('record %d of the failover run', number)
        wait_for(lambda: handler.current_server == ('127.0.0.1', first_port), 30, 'the return to the first server')
        handler.close()
        assert handler.dropped_total == 0
        assert first.stop() == 0 and second.stop() == 0
        on_first, on_second = numbers(first), numbers(second)
    finally:
        first.stop(signal.SIGKILL)
        second.stop(signal.SIGKILL)
    landed = set(on_first) | set(on_second)
    assert landed == set(range(total)), 'lost %s' % sorted(set(range(total)) - landed)[:10]
    assert max(on_first.values()) == 1 and max(on_second.values()) == 1, 'a server wrote a record twice'
    both = sorted(set(on_first) & set(on_second))
    err = capsys.readouterr().err
    with capsys.disabled():
        print('\nfailover: %d records on the first server, %d on the second, %d on both (in flight at the kill)'
              % (len(on_first), len(on_second), len(both)))
    assert on_second and max(on_first) == total - 1, 'the handler did not move over and back'
    assert all(total * 3 // 10 - 2000 <= n <= total * 3 // 10 for n in both)
    assert 'could not connect to 127.0.0.1:%d' % first_port in err


SPOOLING_APP = textwrap.dedent('''
    import logging, sys, time
    sys.path.insert(0, {repo!r})
    from loghog import LoghogHandler
    port, spool_dir, first, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    handler = LoghogHandler('demo', '127.0.0.1', port, spool_dir=spool_dir, flush_timeout=60.0)
    logger = logging.getLogger('app')
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for number in range(first, first + count):
        logger.info('record %d of the spool run', number)
    deadline = time.monotonic() + 30
    while not handler.spooled and time.monotonic() < deadline:
        time.sleep(0.01)
    print('spooled' if handler.spooled else 'not spooled', flush=True)
    if sys.argv[5] == 'hang':
        time.sleep(600)
''')


def start_app(port: int, spool_dir: str, first: int, count: int, then: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', SPOOLING_APP.format(repo=REPO), str(port), spool_dir,
                             str(first), str(count), then], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
@pytest.mark.parametrize('successors', [1, 2])
def test_a_killed_application_s_spool_is_delivered_once_by_the_next_process(tmp_path, successors):
    """The app dies (SIGKILL) while the server is down; the next process(es) with its spool_dir deliver it."""
    port = free_port()
    spool_dir = str(tmp_path / 'spool')
    app = start_app(port, spool_dir, 0, 3000, 'hang')
    try:
        assert app.stdout.readline().strip() == 'spooled'
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait(10)
    assert any(name.endswith('.spool') for name in os.listdir(spool_dir))
    daemon = server_in(tmp_path / 'server', port).start()
    try:
        # like new gunicorn workers: each logs its own records; only one may take the dead one's spool
        apps = [start_app(port, spool_dir, 10000 * (i + 1), 10, 'exit') for i in range(successors)]
        for process in apps:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            assert 'record(s)' not in err, err
        counts = numbers(daemon)
        assert daemon.stop() == 0
        duplicates = read_stats_file(daemon).get('duplicates_dropped')
    finally:
        daemon.stop(signal.SIGKILL)
    expected = set(range(3000)) | {10000 * (i + 1) + j for i in range(successors) for j in range(10)}
    assert set(counts) == expected, 'lost %s' % sorted(expected - set(counts))[:10]
    assert set(counts.values()) == {1}
    assert duplicates == 0, 'the spool was sent by more than one process'
    assert os.listdir(spool_dir) == []


def test_a_record_over_the_server_s_max_message_size_is_cut_to_fit_in_a_batch(tmp_path, make_handler):
    """Version 1 drops such a record after two tries (tests/test_client_batches.py); a batch need not."""
    config = on_port(free_port())
    config['server']['max_message_size'] = '8K'
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        handler = make_handler('demo', '127.0.0.1', daemon.ports['tcp'], flush_timeout=30.0)
        logger = logger_for(handler)
        logger.info('record 0 before')
        logger.info('huge ' + 'x' * 20000)
        for number in range(1, 6):
            logger.info('record %d after', number)
        handler.close()
        wait_for(lambda: sorted(numbers(daemon)) == list(range(6)), 10, 'the six small records')
        assert (handler.oversized_total, handler.dropped_total, handler.queued) == (1, 0, 0)
        [cut] = [line for line in daemon.read_lines(LOG_FILE) if ' - huge ' in line]
        assert re.search(r"huge x{1000,}x \[cut by loghog: the record was 20\d\d\d bytes, over the server's "
                         r"max_message_size of 8192\]\n\Z", cut) and len(cut) < 8192
        assert daemon.stats()['rejected_by_reason'] == {}


def test_close_says_could_not_connect_when_no_server_was_ever_reached(make_handler, capsys):
    port = free_port()
    handler = make_handler('demo', host='127.0.0.1:%d,127.0.0.1:%d' % (port, port), flush_timeout=0.5)
    logger_for(handler).info('record 0')
    handler.close()
    err = capsys.readouterr().err
    assert '1 record(s) not delivered: could not connect to 127.0.0.1:%d, 127.0.0.1:%d' % (port, port) in err
    assert 'most likely arrived' not in err and 'acknowledged' not in err
