"""Our LoghogHandler against a real loghogd: every transport, a server that is late, restarts, and forks."""

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import collections
import json
import time
from typing import Dict, List

import pytest

from tests.support.daemon import VENV07_PYTHON, Loghogd, facilities_conf, wait_for
from tests.test_handler import REPO, logger_for, run_script_logging_100_records

FACILITIES = facilities_conf({'demo': {}, 'signed': {'secret': 'sekrit'}})
LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - (?P<host>[^\n]*?) - (?P<body>.*)\n\Z', re.S)
UNICODE = 'wörld ☃ \U0001F600'


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1, so a daemon can come back on it."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(('127.0.0.1', 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port


def on_port(port: int) -> Dict[str, Dict[str, str]]:
    return {'server': {'listen_ipv4': '127.0.0.1:%d' % port}}


def bodies(daemon: Loghogd, relative: str = 'demo/root.log') -> List[str]:
    return [LINE.match(line).group('body') for line in daemon.read_lines(relative)]


def wait_for_bodies(daemon: Loghogd, count: int, relative: str = 'demo/root.log', timeout: float = 15.0) -> List[str]:
    daemon.wait_for_lines(relative, count, timeout)
    return bodies(daemon, relative)


@pytest.mark.parametrize('stream, options', [
    (True, {}), (False, {}), (True, {'compression': True}), (False, {'compression': True}),
])
def test_every_record_lands_over_tcp_and_udp_with_and_without_zlib(tmp_path, make_handler, stream, options):
    with Loghogd(tmp_path, FACILITIES) as daemon:
        port = daemon.ports['tcp' if stream else 'udp']
        handler = make_handler('demo', '127.0.0.1', port, stream, hostname='web1', **options)
        logger = logger_for(handler)
        expected = ['%d %s' % (i, UNICODE) for i in range(50)]
        for body in expected:
            logger.info(body)
            if not stream:
                time.sleep(0.001)  # UDP has no back-pressure: pace it as CLIENT-0.7.md advises
        handler.close()
        lines = daemon.wait_for_lines('demo/root.log', len(expected))
        assert [LINE.match(line).group('body') for line in lines] == expected
        assert {LINE.match(line).group('host') for line in lines} == {'web1'}


@pytest.mark.parametrize('secret', ['sekrit', b'sekrit'])
def test_signed_records_land_and_a_wrong_secret_is_rejected(tmp_path, make_handler, secret):
    with Loghogd(tmp_path, FACILITIES) as daemon:
        good = make_handler('signed', '127.0.0.1', daemon.ports['tcp'], secret=secret)
        forged = make_handler('signed', '127.0.0.1', daemon.ports['tcp'], secret='guess')
        logger_for(forged, 'forged').info('forged')
        logger_for(good, 'e2e').info('signed ' + UNICODE)
        forged.close()
        good.close()
        assert wait_for_bodies(daemon, 1, 'signed/root.log') == ['signed ' + UNICODE]
        wait_for(lambda: daemon.stats()['rejected_by_reason'].get('bad_signature') == 1, 10, 'the rejection')


def test_tls_with_a_client_certificate(tmp_path, make_handler):
    from tests.support.pki import make_pki
    pki = make_pki(tmp_path)
    with Loghogd(tmp_path, FACILITIES, pki=pki) as daemon:
        ssl_info = {'pemfile': pki.client_pem('web1'), 'cacert': pki.ca_cert}
        handler = make_handler('demo', '127.0.0.1', daemon.ports['tls'], ssl_info=ssl_info, hostname='web1')
        logger = logger_for(handler)
        logger.info('over tls ' + UNICODE)
        assert wait_for_bodies(daemon, 1) == ['over tls ' + UNICODE]
        time.sleep(0.2)  # an idle gap: the connection must stay usable
        for i in range(20):
            logger.info('tls %d', i)
        handler.close()
        assert wait_for_bodies(daemon, 21)[1:] == ['tls %d' % i for i in range(20)]


def test_a_server_that_starts_late_receives_everything_logged_meanwhile(tmp_path, make_handler):
    port = free_port()
    handler = make_handler('demo', '127.0.0.1', port, max_buffer_size=500)
    logger = logger_for(handler)
    for i in range(300):
        logger.info('early %d', i)
    time.sleep(0.5)  # several refused connects and back-offs
    with Loghogd(tmp_path, FACILITIES, config=on_port(port)) as daemon:
        assert wait_for_bodies(daemon, 300) == ['early %d' % i for i in range(300)]
        assert handler.dropped_total == 0


def test_overflow_while_down_drops_exactly_the_oldest(tmp_path, make_handler, capsys):
    port = free_port()
    handler = make_handler('demo', '127.0.0.1', port, max_buffer_size=10)
    logger = logger_for(handler)
    for i in range(25):
        logger.info('record %d', i)
    assert handler.dropped_total == 15
    with Loghogd(tmp_path, FACILITIES, config=on_port(port)) as daemon:
        assert wait_for_bodies(daemon, 10) == ['record %d' % i for i in range(15, 25)]
        wait_for(lambda: '15 record(s) were dropped' in capsys.readouterr().err, 5, 'the drop report')


@pytest.mark.parametrize('acknowledged, signum', [
    (False, signal.SIGTERM), (False, signal.SIGKILL), (True, signal.SIGTERM), (True, signal.SIGKILL),
])
def test_restart_mid_stream_counts_what_was_lost(tmp_path, make_handler, acknowledged, signum):
    """Plain version-1 delivery cannot promise exactly-once (this measures what a restart costs);
    acknowledged delivery must lose and duplicate nothing, even across a kill -9."""
    port = free_port()
    daemon = Loghogd(tmp_path, FACILITIES, config=on_port(port)).start()
    handler = make_handler('demo', '127.0.0.1', port, max_buffer_size=100000, acknowledged=acknowledged)
    logger = logger_for(handler)
    total = 3000
    done = threading.Event()

    def produce() -> None:
        for i in range(total):
            logger.info('n %d', i)
            if i % 10 == 0:
                time.sleep(0.001)
        done.set()
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: len(daemon.read_lines('demo/root.log')) > total // 4, 20, 'a quarter of the stream')
        daemon.stop(signum)
        daemon.start()
        producer.join(60)
        handler.flush_timeout = 20.0
        handler.close()
        time.sleep(0.5)  # anything still in the daemon's hands reaches the file
        received = bodies(daemon)
    finally:
        daemon.stop()
    numbers = [int(body.split()[1]) for body in received]
    lost = total - len(set(numbers))
    duplicated = len(numbers) - len(set(numbers))
    print('restart (%s, %s) mid-stream: %d sent, %d lost, %d duplicated, %d dropped by the client'
          % ('acknowledged' if acknowledged else 'plain', signal.Signals(signum).name, total, lost, duplicated,
             handler.dropped_total))
    assert set(numbers) <= set(range(total))
    assert numbers[-1] == total - 1  # the stream continued on the new daemon
    assert duplicated == 0  # plain mode never resends what the kernel accepted; acked mode is deduplicated
    if acknowledged:
        assert lost == 0 and handler.dropped_total == 0


def test_a_process_that_logs_100_records_and_exits_delivers_all_100(tmp_path):
    with Loghogd(tmp_path, FACILITIES) as daemon:
        run_script_logging_100_records(daemon.ports['tcp'])
        assert wait_for_bodies(daemon, 100) == ['record %d' % i for i in range(100)]


BUSY_APP = """
import logging, sys
sys.path.insert(0, {repo!r})
from loghog import LoghogHandler
sys.setswitchinterval(0.05)  # as if many busy threads took turns with the sender for the GIL
handler = LoghogHandler('demo', '127.0.0.1', int(sys.argv[1]), flush_timeout=60.0)
logger = logging.getLogger('busy')
logger.addHandler(handler)
logger.propagate = False
padding = 'x' * 160  # records of a usual size: 200 000 of them are more than the queue holds
for number in range(200000):
    logger.warning('busy %d %s', number, padding)
handler.close()
print(handler.dropped_total)
"""


def test_a_busy_application_that_lets_the_sender_have_the_gil_rarely_loses_nothing_with_the_defaults(tmp_path):
    """Each pass of the sender waits for the GIL a few times, so a pass takes all that was queued meanwhile:
    with a few hundred records a pass (as before), 200 000 records at full speed overflowed the 64 MiB queue."""
    with Loghogd(tmp_path, FACILITIES) as daemon:
        dropped = subprocess.run([sys.executable, '-c', BUSY_APP.format(repo=REPO), str(daemon.ports['tcp'])],
                                 check=True, timeout=300, capture_output=True, text=True).stdout.strip()
        assert dropped == '0'
        daemon.wait_for_lines('demo/root.log', 200000, timeout=60)
        assert len(daemon.read_lines('demo/root.log')) == 200000


@pytest.mark.filterwarnings('ignore:This process .* is multi-threaded')  # the point: fork after threads
def test_a_forked_child_delivers_through_its_own_connection(tmp_path, make_handler):
    with Loghogd(tmp_path, FACILITIES) as daemon:
        handler = make_handler('demo', '127.0.0.1', daemon.ports['tcp'])
        logger = logger_for(handler)
        logger.info('parent')
        wait_for_bodies(daemon, 1)
        pid = os.fork()
        if pid == 0:
            try:
                for i in range(20):
                    logger.info('child %d', i)
                logging.shutdown()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        logger.info('parent again')
        handler.close()
        received = wait_for_bodies(daemon, 22)
        assert sorted(received) == sorted(['parent', 'parent again'] + ['child %d' % i for i in range(20)])



CLIENT07_CHECKING_ITS_SOCKET = '''
import json, logging, select, time
import loghog
from loghog import LoghogHandler
assert loghog.__file__.endswith('site-packages/loghog.py'), loghog.__file__  # the deployed 0.7, not ours
handler = LoghogHandler('demo', '127.0.0.1', PORT, hostname='old07')
logger = logging.getLogger('legacy')
logger.propagate = False
logger.addHandler(handler)
logger.setLevel(logging.INFO)
logger.info('0.7 record 0')
sock = handler.sock
local = sock.getsockname()
readable = 0
for i in range(1, 200):
    time.sleep(0.01)
    readable += bool(select.select([sock], [], [], 0)[0])  # 0.7 would recv(1) such a byte and drop it unseen
    logger.info('0.7 record %d', i)
time.sleep(0.5)  # the server's passes for the last records, with the other client's ACKs
readable += bool(select.select([sock], [], [], 0)[0])
print(json.dumps({'readable': readable, 'same_socket': handler.sock is sock, 'local': list(local),
                  'local_now': list(handler.sock.getsockname()), 'buffered': len(handler.buffer)}))
handler.close()
'''


def test_a_07_client_beside_an_acknowledged_one_never_has_a_byte_to_read(tmp_path, make_handler):
    """The real 0.7 client runs while our handler's records are acknowledged in the same loop passes."""
    with Loghogd(tmp_path, FACILITIES) as daemon:
        handler = make_handler('demo', '127.0.0.1', daemon.ports['tcp'], hostname='web1')
        logger = logger_for(handler)
        stop = threading.Event()
        logged = [0]

        def keep_logging() -> None:
            while not stop.is_set():
                logger.info('acked %d', logged[0])
                logged[0] += 1
                time.sleep(0.001)
        producer = threading.Thread(target=keep_logging)
        producer.start()
        try:
            wait_for(lambda: daemon.stats()['acks_sent'] > 0, 10, 'the first acknowledgement')
            acks_before = daemon.stats()['acks_sent']
            code = CLIENT07_CHECKING_ITS_SOCKET.replace('PORT', str(daemon.ports['tcp']))
            legacy = json.loads(subprocess.run([VENV07_PYTHON, '-c', code], cwd='/', capture_output=True,
                                               text=True, timeout=60, check=True).stdout)
        finally:
            stop.set()
            producer.join(10)
        handler.close()
        assert legacy == {'readable': 0, 'same_socket': True, 'local': legacy['local'],
                          'local_now': legacy['local'], 'buffered': 0}
        lines = daemon.wait_for_lines('demo/root.log', logged[0] + 200)
        by_host = collections.Counter(LINE.match(line).group('host') for line in lines)
        assert by_host == {'web1': logged[0], 'old07': 200}
        stats = daemon.stats()
        assert stats['acks_sent'] > acks_before  # our client was acknowledged while 0.7 was sending
        assert stats['connections_accepted'] == 2  # one each: 0.7 never lost its connection
        assert handler.acknowledged and handler.dropped_total == 0
