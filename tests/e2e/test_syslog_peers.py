"""Syslog from Debian's rsyslog (omfwd over TCP and TLS) and nginx into a real loghogd."""

import socket

import pytest

from tests.support.daemon import Loghogd, bodies, facilities_conf, wait_for
from tests.support.peers import Nginx, Rsyslog
from tests.support.pki import make_pki

FACILITIES = facilities_conf({'app': {}, 'web': {}})
HOST = socket.gethostname()
COUNT = 20

pytestmark = pytest.mark.slow


def omfwd(port: int, preamble: str = '', **options: str) -> str:
    """rsyslog.conf rules forwarding what program `app` logs to loghogd on `port`."""
    settings = dict(target='127.0.0.1', port=str(port), protocol='tcp', **options)
    return '%s\nif $programname == "app" then action(type="omfwd" %s)\n' % (
        preamble, ' '.join('%s="%s"' % item for item in settings.items()))


def forward_and_check(daemon: Loghogd, rsyslog: Rsyslog, relative: str = 'app/root.log') -> None:
    """COUNT records through rsyslog; every one lands once, with this host's name."""
    with rsyslog:
        for number in range(COUNT):
            rsyslog.send('app', 'forwarded %d' % number)
        daemon.wait_for_lines(relative, COUNT, timeout=30)
    expected = ['forwarded %d' % number for number in range(COUNT)]
    assert bodies(daemon.read_lines(relative), host=HOST) == expected


@pytest.mark.parametrize('framing, template', [('traditional', 'RSYSLOG_TraditionalForwardFormat'),
                                               ('octet-counted', 'RSYSLOG_SyslogProtocol23Format'),
                                               ('traditional', 'RSYSLOG_ForwardFormat')])
def test_rsyslog_forwards_over_tcp(tmp_path, framing, template):
    with Loghogd(tmp_path, FACILITIES, config={'server': {'listen_ipv4_syslog': '127.0.0.1:0'}}) as daemon:
        forward = omfwd(daemon.ports['syslog-tcp'], TCP_Framing=framing, template=template)
        forward_and_check(daemon, Rsyslog(tmp_path, forward))
        assert daemon.stats()['syslog_messages_by_listener'] == {'tcp': COUNT}


@pytest.mark.parametrize('driver', ['gtls', 'ossl'])
def test_rsyslog_forwards_over_tls_with_a_client_certificate_from_loghog_client_cert(tmp_path, driver):
    pki = make_pki(tmp_path)
    client_pem = pki.client_pem(HOST)
    config = {'server': {'listen_ipv4_syslog_tls': '127.0.0.1:0', 'pemfile': pki.server_pem,
                         'cacert': pki.ca_cert}}
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        preamble = ('global(DefaultNetstreamDriverCAFile="%s" DefaultNetstreamDriverCertFile="%s" '
                    'DefaultNetstreamDriverKeyFile="%s")' % (pki.ca_cert, client_pem, client_pem))
        forward = omfwd(daemon.ports['syslog-tls'], preamble, StreamDriver=driver, StreamDriverMode='1',
                        StreamDriverAuthMode='x509/certvalid', template='RSYSLOG_SyslogProtocol23Format')
        forward_and_check(daemon, Rsyslog(tmp_path, forward))
        stats = daemon.stats()
        assert stats['syslog_messages_by_listener'] == {'tls': COUNT}
        assert stats['tls_failures'] == 0


@pytest.mark.parametrize('setting', ['required', 'optional'])
def test_rsyslog_without_a_client_certificate_lands_only_where_it_is_optional(tmp_path, setting):
    pki = make_pki(tmp_path)
    config = {'server': {'listen_ipv4_syslog_tls': '127.0.0.1:0', 'pemfile': pki.server_pem,
                         'cacert': pki.ca_cert, 'syslog_tls_client_cert': setting}}
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        forward = omfwd(daemon.ports['syslog-tls'], 'global(DefaultNetstreamDriverCAFile="%s")' % pki.ca_cert,
                        StreamDriver='gtls', StreamDriverMode='1', StreamDriverAuthMode='x509/certvalid')
        with Rsyslog(tmp_path, forward) as rsyslog:
            rsyslog.send('app', 'without a certificate')
            if setting == 'optional':
                assert bodies(daemon.wait_for_lines('app/root.log', 1)) == ['without a certificate']
            else:
                wait_for(lambda: daemon.stats()['tls_failures'] >= 1, what='a refused handshake')
                assert daemon.read_lines('app/root.log') == []


def test_nginx_access_log_lands_in_its_facility(tmp_path):
    with Loghogd(tmp_path, FACILITIES, config={'server': {'listen_ipv4_syslog': '127.0.0.1:0'}}) as daemon:
        access_log = 'access_log syslog:server=127.0.0.1:%d,tag=web;' % daemon.ports['syslog-udp']
        with Nginx(tmp_path, access_log) as nginx:
            for number in range(3):
                assert b'hello' in nginx.get('/page/%d' % number)
            lines = daemon.wait_for_lines('web/root.log', 3)
    assert [('/page/%d' % number) in body for number, body in enumerate(bodies(lines, host=HOST))] == [True] * 3
