"""The client's server list, disk spool and byte-bounded queue, in this process (issue 19)."""

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog.fields import from_spool
from loghog.servers import format_address, parse_servers
from loghog.spool import RECORD, SEGMENT_BYTES, Spool, claim_orphans, read_segment
from tests.support.daemon import REPO, wait_for
from tests.test_handler import Capture, capture  # noqa: F401 (a fixture)

hostnames = st.from_regex(r'[a-z0-9][a-z0-9.-]{0,20}', fullmatch=True)
ipv6 = st.from_regex(r'[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,7}', fullmatch=True)


@given(servers=st.lists(st.tuples(st.one_of(hostnames, ipv6), st.integers(1, 65535)), min_size=1, max_size=4))
def test_a_server_list_written_in_host_parses_back(servers):
    assert parse_servers(','.join(format_address(s) for s in servers), 5566) == servers
    assert parse_servers('ignored', 5566, [format_address(s) for s in servers]) == servers
    assert parse_servers('ignored', 5566, servers) == servers


def test_a_name_without_a_port_gets_the_port_argument():
    assert parse_servers(' a.example, b.example:6000 ', 5567) == [('a.example', 5567), ('b.example', 6000)]
    assert parse_servers('::1', 5566) == [('::1', 5566)]


@given(text=st.text(max_size=40))
def test_parse_servers_gives_addresses_or_a_value_error(text):
    try:
        addresses = parse_servers(text, 5566)
    except ValueError:
        return
    assert addresses and all(isinstance(host, str) and isinstance(port, int) for host, port in addresses)


def frames_of(count: int, size: int = 50):
    return [(seq, b'%d:' % seq + b'x' * size) for seq in range(1, count + 1)]


@settings(max_examples=200)
@given(count=st.integers(1, 20), cut=st.integers(0, 2000), flip=st.integers(0, 2000))
def test_a_torn_or_corrupt_segment_tail_ends_it_and_the_records_before_it_read_back(tmp_path, count, cut, flip):
    spool = Spool(tempfile.mkdtemp(dir=str(tmp_path)), 'id1', 10**6)
    frames = frames_of(count)
    spool.append(frames)
    path = os.path.join(spool.directory, 'id1.1.spool')
    with open(path, 'rb') as stream:
        data = bytearray(stream.read())
    del data[min(cut, len(data)):]
    if data and flip < len(data):
        data[flip] ^= 0xFF
    with open(path, 'wb') as stream:
        stream.write(data)
    damage = min(cut, flip if flip < len(data) else cut)
    ends, end = [], 0
    for _, frame in frames:
        end += RECORD.size + len(frame)
        ends.append(end)
    intact = sum(1 for end in ends if end <= damage)
    assert read_segment(path, 0) == frames[:intact]


def test_read_segment_skips_acknowledged_records_and_takes_no_absurd_length(tmp_path):
    spool = Spool(str(tmp_path), 'id1', 10**6)
    spool.append(frames_of(5))
    path = os.path.join(str(tmp_path), 'id1.1.spool')
    assert [seq for seq, _ in read_segment(path, 3)] == [4, 5]
    with open(path, 'ab') as stream:
        stream.write(struct.pack('!QLL', 6, 2**31, 0))
    assert [seq for seq, _ in read_segment(path, 0)] == [1, 2, 3, 4, 5]


def test_the_spool_deletes_acknowledged_segments_and_stays_under_its_bound(tmp_path):
    spool = Spool(str(tmp_path), 'id1', 3 * SEGMENT_BYTES)
    frames = [(seq, b'y' * 10000) for seq in range(1, 1001)]  # about 10 MB: ten segments
    for start in range(0, 1000, 50):
        spool.append(frames[start:start + 50])
    sizes = sum(os.path.getsize(os.path.join(str(tmp_path), name)) for name in os.listdir(str(tmp_path)))
    assert sizes <= 3 * SEGMENT_BYTES + 50 * 10016
    assert spool.unprotected_total > 0
    spool.confirm(1000)
    left = sorted(os.listdir(str(tmp_path)))
    assert len(left) == 2 and left[0].endswith('.spool') and left[1] == 'id1.lock'  # the segment being written
    spool.remove()
    assert os.listdir(str(tmp_path)) == []


def test_a_live_spool_is_never_claimed_and_a_released_one_is_claimed_once(tmp_path):
    spool = Spool(str(tmp_path), 'live', 10**6)
    spool.append(frames_of(3))
    assert list(claim_orphans(str(tmp_path), 'me')) == []
    spool.release()
    [orphan] = claim_orphans(str(tmp_path), 'me')
    assert list(claim_orphans(str(tmp_path), 'other')) == []  # held by the first claimer
    assert [read_segment(path, orphan.acknowledged()) for path in orphan.segments()] == [frames_of(3)]
    orphan.finish()
    assert os.listdir(str(tmp_path)) == []


def test_the_queue_is_bounded_in_bytes_and_reports_its_drops_once_with_the_count(make_handler, capsys):
    down = Capture(listening=False)
    try:
        # each record counts as its text (100 characters), its logger's name and 256 bytes
        handler = make_handler('demo', '127.0.0.1', down.port, max_buffer_bytes=100 * (256 + len('bounded') + 100))
        logger = logging.getLogger('bounded')
        logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
        for number in range(250):
            logger.info('%03d' % number + 'z' * 97)
        assert handler.queued == 100 and handler.dropped_total == 150
        assert handler.queued_bytes <= handler.max_buffer_bytes
        wait_for(lambda: 'could not connect' in capsys.readouterr().err, 5, 'the first connection failure')
        down.listen()
        records = down.wait_for_records(100)
        assert [r['body'][:3] for r in records] == ['%03d' % n for n in range(150, 250)]
        wait_for(lambda: '150 record(s) were dropped' in capsys.readouterr().err, 5, 'the drop report')
        handler.close()
        assert 'dropped' not in capsys.readouterr().err
    finally:
        down.close()


def test_a_spool_dir_needs_acknowledged_delivery(tmp_path):
    from loghog import LoghogHandler
    with pytest.raises(ValueError, match='spool_dir needs acknowledged'):
        LoghogHandler('demo', spool_dir=str(tmp_path), acknowledged=False)


def test_with_a_spool_an_outage_longer_than_the_memory_bound_loses_nothing(make_handler, tmp_path):
    down = Capture(listening=False)
    try:
        handler = make_handler('demo', '127.0.0.1', down.port, spool_dir=str(tmp_path / 'spool'),
                               max_buffer_bytes=50 * 400, flush_timeout=30.0)
        logger = logging.getLogger('outlasting')
        logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
        for number in range(2000):
            logger.info('record %d', number)
            if number % 25 == 24:
                wait_for(lambda: handler.spooled, 10, 'the spool to catch up')  # a disk that keeps up
        assert handler.queued_bytes <= 50 * 400 and handler.queued == 2000 and handler.dropped_total == 0
        down.listen()
        handler.close()
        assert [r['body'] for r in down.records()] == ['record %d' % n for n in range(2000)]
        assert handler.dropped_total == 0
        assert os.listdir(str(tmp_path / 'spool')) == []
    finally:
        down.close()


def test_dictconfig_takes_a_server_list_and_the_handler_moves_past_a_dead_server(capture):
    import logging.config
    dead = Capture(listening=False)
    try:
        logging.config.dictConfig({
            'version': 1,
            'disable_existing_loggers': False,
            'handlers': {'loghog': {'class': 'loghog.LoghogHandler', 'app_name': 'demo',
                                    'servers': ['127.0.0.1:%d' % dead.port, '127.0.0.1:%d' % capture.port]}},
            'loggers': {'servers.test': {'handlers': ['loghog'], 'level': 'INFO', 'propagate': False}},
        })
        logger = logging.getLogger('servers.test')
        [handler] = logger.handlers
        logger.info('to whichever is up')
        handler.close()
        logger.handlers = []
        assert [r['body'] for r in capture.wait_for_records(1)] == ['to whichever is up']
        assert handler.current_server == ('127.0.0.1', capture.port)
    finally:
        dead.close()


def test_a_server_that_never_acknowledges_counts_as_down_when_there_is_another(capture, make_handler, capsys):
    silent = Capture(acking=False)
    try:
        handler = make_handler('demo', servers=[('127.0.0.1', silent.port), ('127.0.0.1', capture.port)],
                               ack_fallback_seconds=0.5)
        logger = logging.getLogger('silent.first')
        logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
        for number in range(5):
            logger.info('record %d', number)
        assert [r['body'] for r in capture.wait_for_records(5)] == ['record %d' % n for n in range(5)]
        assert handler.acknowledged and handler.current_server == ('127.0.0.1', capture.port)
        assert 'no acknowledgement for 0.5 s' in capsys.readouterr().err
        handler.close()
        assert handler.dropped_total == 0
    finally:
        silent.close()


def test_a_spool_that_cannot_be_written_is_reported_and_records_still_go_out(capture, make_handler, tmp_path,
                                                                             capsys):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a directory')
    handler = make_handler('demo', '127.0.0.1', capture.port, spool_dir=str(blocker / 'spool'))
    logger = logging.getLogger('unwritable.spool')
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    for number in range(5):
        logger.info('record %d', number)
    handler.close()
    assert [r['body'] for r in capture.wait_for_records(5)] == ['record %d' % n for n in range(5)]
    assert 'cannot write the spool in %s' % (blocker / 'spool') in capsys.readouterr().err
    assert handler.dropped_total == 0


FORKING_APP = textwrap.dedent('''
    import logging, os, sys, time
    sys.path.insert(0, {repo!r})
    from loghog import LoghogHandler
    handler = LoghogHandler('demo', '127.0.0.1', int(sys.argv[1]), spool_dir=sys.argv[2])
    logger = logging.getLogger('app')
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info('from the parent')
    while not handler.spooled:
        time.sleep(0.01)
    child = os.fork()
    if child == 0:
        logger.info('from the child')
        time.sleep(600)
    print(child, flush=True)
    time.sleep(600)
''')


def test_a_forked_child_does_not_keep_its_dead_parent_s_spool_locked(tmp_path):
    """Like a gunicorn master that logged before forking its workers, then died."""
    down = Capture(listening=False)
    spool_dir = str(tmp_path / 'spool')
    parent = subprocess.Popen([sys.executable, '-c', FORKING_APP.format(repo=REPO), str(down.port), spool_dir],
                              stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        child = int(parent.stdout.readline())
        wait_for(lambda: len([n for n in os.listdir(spool_dir) if n.endswith('.lock')]) == 2, 10,
                 'the child to spool its record too')
        assert list(claim_orphans(spool_dir, 'test')) == []  # both alive
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        [orphan] = claim_orphans(spool_dir, 'test')  # the parent's, though the child that inherited it lives
        assert [from_spool(data)[0][2] for path in orphan.segments()
                for _, data in read_segment(path, 0)] == ['from the parent']
        assert orphan.origin() == ('demo', socket.gethostname())
        orphan.release()
    finally:
        parent.kill()
        if child:
            os.kill(child, signal.SIGKILL)
        down.close()
