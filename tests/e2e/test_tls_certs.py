"""Certificates made by loghog-server-cert / loghog-client-cert against a real loghogd.

A client of this CA gets in (the deployed 0.7 client, the project's client
with its hostname check, a raw ssl socket); a client of another CA, an
expired one and a revoked one are refused, and the daemon's log names the
peer address and the reason, the only place an operator can see it.
"""

import logging
import signal
import socket
import ssl

import pytest

from tests.support.daemon import Loghogd, bodies, frame, run_client07, wait_for
from tests.support.pki import make_pki

FACILITIES = '[app]\nrotate = daily\nbackup_count = 3\n'
REFUSALS = {
    'other_ca': 'unable to get local issuer certificate',
    'expired': 'certificate has expired',
    'revoked': 'certificate revoked',
}
CLIENT07 = '''
import logging, time
from loghog import LoghogHandler
handler = LoghogHandler('app', host='127.0.0.1', port=%(port)d, hostname='web1', ssl_info=%(ssl_info)r)
logger = logging.getLogger('web')
logger.propagate = False
logger.addHandler(handler)
logger.setLevel(logging.INFO)
for i in range(%(count)d):
    logger.info('0.7 over tls %%d', i)
    time.sleep(0.05)
handler.close()
'''


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp('tls-certs'))
    pki.client_pem('revoked-client')
    pki.revoke('revoked-client')
    return pki


@pytest.fixture
def daemon(tmp_path, pki):
    """A loghogd that checks the CRL, as a production server with crlfile does."""
    with Loghogd(tmp_path, FACILITIES, pki=pki, config={'server': {'crlfile': pki.crl}}) as running:
        yield running


def web1_bodies(daemon, relative='app/root.log'):
    return bodies(daemon.read_lines(relative), 'web1')


def daemon_log(daemon) -> str:
    """What loghogd reported, on stderr and in its own log file."""
    try:
        with open(daemon.internal_log, encoding='utf-8', errors='replace') as stream:
            logged = stream.read()
    except FileNotFoundError:
        logged = ''
    return daemon.output() + logged


def bad_client_pem(pki, kind: str) -> str:
    if kind == 'other_ca':
        return pki.other_ca_client_pem('web1')
    if kind == 'expired':
        return pki.expired_client_pem('web1')
    return pki.client_pem('revoked-client')


def tls_send(daemon, pki, client_pem: str, body: str) -> int:
    """Send one frame over TLS; return the local port the daemon sees as the peer's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(pki.ca_cert)
    context.load_cert_chain(client_pem)
    with socket.create_connection(('127.0.0.1', daemon.ports['tls']), timeout=5) as raw:
        port = raw.getsockname()[1]
        try:
            with context.wrap_socket(raw) as sock:
                sock.sendall(frame('app', 'root', body, 'web1'))
        except (OSError, ssl.SSLError):
            pass   # TLS 1.2 refuses in the handshake; TLS 1.3 after it, so the send "succeeds"
    return port


def run_07_client(daemon, client_pem: str, ca_cert: str, count: int) -> None:
    run_client07(CLIENT07 % {'port': daemon.ports['tls'], 'count': count,
                             'ssl_info': {'pemfile': client_pem, 'cacert': ca_cert}})


def test_07_client_with_a_commands_certificate_is_accepted(daemon, pki):
    run_07_client(daemon, pki.client_pem('web1'), pki.ca_cert, 5)
    daemon.wait_for_lines('app/root.log', 5)
    assert web1_bodies(daemon) == ['0.7 over tls %d' % i for i in range(5)]
    assert daemon.stats()['tls_failures'] == 0


def test_project_client_checking_the_servers_host_name_is_accepted(daemon, pki):
    from loghog.handler import LoghogHandler
    handler = LoghogHandler('app', host='localhost', port=daemon.ports['tls'], hostname='web1',
                            ssl_info={'pemfile': pki.client_pem('web1'), 'cacert': pki.ca_cert,
                                      'check_hostname': True})
    try:
        handler.handle(logging.makeLogRecord({'name': 'root', 'msg': 'new client over tls', 'levelno': 20}))
    finally:
        handler.close()
    daemon.wait_for_lines('app/root.log', 1)
    assert web1_bodies(daemon) == ['new client over tls']
    assert daemon.stats()['tls_failures'] == 0


def test_raw_ssl_client_with_a_commands_certificate_is_accepted(daemon, pki):
    tls_send(daemon, pki, pki.client_pem('web1'), 'raw over tls')
    daemon.wait_for_lines('app/root.log', 1)
    assert web1_bodies(daemon) == ['raw over tls']


@pytest.mark.parametrize('kind', sorted(REFUSALS))
def test_refused_client_is_logged_with_peer_and_reason(daemon, pki, kind):
    client_pem = bad_client_pem(pki, kind)
    port = tls_send(daemon, pki, client_pem, 'must not land')
    expected = 'TLS handshake with 127.0.0.1:%d failed: %s' % (port, REFUSALS[kind])
    wait_for(lambda: expected in daemon_log(daemon), what='%r in the log' % expected)

    run_07_client(daemon, client_pem, pki.ca_cert, 3)
    wait_for(lambda: daemon_log(daemon).count(REFUSALS[kind]) >= 2, what='the 0.7 client refused too')
    daemon.send_tcp(frame('app', 'root', 'marker', 'web1'))
    daemon.wait_for_lines('app/root.log', 1)
    assert web1_bodies(daemon) == ['marker']
    stats = daemon.stats()
    assert stats['tls_failures'] >= 2 and stats['accepted'] == 1


def test_revocation_takes_effect_on_reload(tmp_path, pki):
    client_pem = pki.client_pem('revoked-on-reload')
    with Loghogd(tmp_path, FACILITIES, pki=pki, config={'server': {'crlfile': pki.crl}}) as daemon:
        tls_send(daemon, pki, client_pem, 'before revoke')
        daemon.wait_for_lines('app/root.log', 1)

        pki.revoke('revoked-on-reload')
        reloads = daemon_log(daemon).count('reloaded ')
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon_log(daemon).count('reloaded ') > reloads, what='the reload')

        port = tls_send(daemon, pki, client_pem, 'after revoke')
        expected = 'TLS handshake with 127.0.0.1:%d failed: certificate revoked' % port
        wait_for(lambda: expected in daemon_log(daemon), what='%r in the log' % expected)
        tls_send(daemon, pki, pki.client_pem('web1'), 'still welcome')
        daemon.wait_for_lines('app/root.log', 2)
        assert web1_bodies(daemon) == ['before revoke', 'still welcome']


def test_server_without_crlfile_does_not_see_revocations(tmp_path, pki):
    """Why the Debian config sets crlfile: revoking alone does not lock a client out."""
    with Loghogd(tmp_path, FACILITIES, pki=pki) as daemon:
        tls_send(daemon, pki, pki.client_pem('revoked-client'), 'no crl check')
        daemon.wait_for_lines('app/root.log', 1)
        assert web1_bodies(daemon) == ['no crl check']
