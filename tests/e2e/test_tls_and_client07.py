"""Mutual TLS, and the deployed loghog 0.7 client, against a real loghogd."""

import json
import re
import socket
import time

import pytest

from tests.support.daemon import Loghogd, bodies, facilities_conf, frame, run_client07, wait_for
from tests.support.pki import make_pki

FACILITIES = facilities_conf({'app': {}, 'app:web': {}, 'signed': {'secret': 'sekrit'}})
BODY = 'record %d wörld ☃ 😀'
LARGE = ''.join('%06d ' % i for i in range(1000))[:7000]

CLIENT07 = '''
import json, logging, sys, time
from loghog import LoghogHandler
options = json.loads(%(options)r)
app = options.pop('app', 'app')
pace = options.pop('pace', 0)
handler = LoghogHandler(app, host='127.0.0.1', hostname='web1', **options)
logger = logging.getLogger('web.requests')
logger.propagate = False
logger.addHandler(handler)
logger.setLevel(logging.DEBUG)
for i in range(%(count)d):
    logger.info(%(body)r, i)
    time.sleep(pace)
try:
    raise ValueError('it broke')
except ValueError:
    logger.exception('traceback follows')
time.sleep(pace)
logger.info(%(large)r)
handler.close()
'''


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp('pki')))


@pytest.fixture
def daemon(tmp_path, pki):
    with Loghogd(tmp_path, FACILITIES, pki=pki) as running:
        yield running


def web1_bodies(lines):
    return bodies(lines, 'web1')


def run_07_client(daemon, count, **options):
    transport = 'tls' if 'ssl_info' in options else 'udp' if options.get('stream') is False else 'tcp'
    options['port'] = daemon.ports[transport]
    code = CLIENT07 % {'options': json.dumps(options), 'count': count, 'body': BODY, 'large': LARGE}
    run_client07(code)


def assert_07_records(daemon, count, relative='app/web.log'):
    wait_for(lambda: daemon.stats()['accepted'] >= count + 2, what='%d records accepted' % (count + 2))
    text = ''.join(daemon.read_lines(relative))
    for i in range(count):
        assert ' - web1 - %s\n' % (BODY % i) in text
    assert ' - web1 - traceback follows\nTraceback (most recent call last):\n' in text
    assert 'ValueError: it broke\n' in text
    assert ' - web1 - %s\n' % LARGE in text
    assert len(re.findall(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - web1 - ', text, re.M)) == count + 2


def test_tls_client_with_a_certificate_from_the_ca_is_accepted(daemon, pki):
    with daemon.connect_tls(pki.client_pem('web1')) as sock:
        assert sock.version() in ('TLSv1.2', 'TLSv1.3')
        sock.sendall(frame('app', 'root', 'over tls ☃', 'web1'))
    assert web1_bodies(daemon.wait_for_lines('app/root.log', 1)) == ['over tls ☃']


def test_stalled_tls_handshake_is_cut_and_does_not_delay_others(daemon, pki):
    stalled = [socket.create_connection(('127.0.0.1', daemon.ports['tls'])) for _ in range(20)]
    stalled[0].sendall(b'\x16\x03\x01\x00\xff\x01\x00')
    client_pem = pki.client_pem('web1')
    for i in range(5):
        started = time.monotonic()
        with daemon.connect_tls(client_pem) as sock:
            assert time.monotonic() - started < 1.0
            sock.sendall(frame('app', 'root', 'good %d' % i, 'web1'))
    assert web1_bodies(daemon.wait_for_lines('app/root.log', 5)) == ['good %d' % i for i in range(5)]
    for sock in stalled:
        sock.settimeout(5)
        assert sock.recv(100) == b''
        sock.close()
    assert 'no complete handshake within' in daemon.output()


def test_plaintext_on_the_tls_port_is_never_parsed(daemon):
    with socket.create_connection(('127.0.0.1', daemon.ports['tls'])) as sock:
        sock.sendall(frame('app', 'root', 'plaintext must not land', 'web1'))
        sock.settimeout(5)
        try:
            sock.recv(1000)
        except ConnectionResetError:
            pass
    wait_for(lambda: 'TLS handshake with 127.0.0.1' in daemon.output(), what='the handshake failure in the log')
    daemon.send_tcp(frame('app', 'root', 'marker', 'web1'))
    assert web1_bodies(daemon.wait_for_lines('app/root.log', 1)) == ['marker']
    assert daemon.stats()['tls_failures'] == 1


def test_client07_tcp(daemon):
    run_07_client(daemon, 50)
    assert_07_records(daemon, 50)


def test_client07_udp(daemon):
    run_07_client(daemon, 50, stream=False, pace=0.002)
    assert_07_records(daemon, 50)


def test_client07_compression(daemon):
    run_07_client(daemon, 50, compression=True)
    assert_07_records(daemon, 50)


def test_client07_secret(daemon):
    run_07_client(daemon, 50, app='signed', secret='sekrit')
    assert_07_records(daemon, 50, 'signed/root.log')
    assert daemon.stats()['rejected'] == 0


def test_client07_wrong_secret_is_dropped(daemon):
    run_07_client(daemon, 5, app='signed', secret='wrong')
    wait_for(lambda: daemon.stats()['rejected_by_reason'].get('bad_signature') == 7, what='7 bad signatures')
    assert daemon.read_lines('signed/root.log') == []


def test_client07_tls_sends_everything_over_one_connection(daemon, pki):
    run_07_client(daemon, 20, ssl_info={'pemfile': pki.client_pem('web1'), 'cacert': pki.ca_cert}, pace=0.05)
    assert_07_records(daemon, 20)
    stats = daemon.stats()
    assert stats['connections_accepted'] == 1
    assert stats['tls_failures'] == 0
