"""Syslog into a real loghogd from real senders: util-linux logger, Python's SysLogHandler, raw sockets."""

import logging
import logging.handlers
import socket
import ssl
import subprocess

import pytest

from tests.support.daemon import Loghogd, bodies, facilities_conf, wait_for
from tests.support.pki import make_pki

FACILITIES = facilities_conf({'app': {}, 'app:ID47': {}, 'shop': {}, 'signed': {'secret': 'sekrit'},
                               'perhost': {'file_per_host': 'yes'}})
SYSLOG = {'server': {'listen_ipv4_syslog': '127.0.0.1:0'}}
HOST = socket.gethostname()


@pytest.fixture
def daemon(tmp_path):
    with Loghogd(tmp_path, FACILITIES, config=SYSLOG) as running:
        yield running


def hosts(lines):
    return [line.split(' - ', 2)[1] for line in lines]


@pytest.mark.parametrize('framing', [['--udp'], ['--tcp'], ['--tcp', '--octet-count']],
                         ids=['udp', 'tcp', 'tcp-octet-count'])
@pytest.mark.parametrize('rfc', ['--rfc3164', '--rfc5424'])
def test_logger_lands_in_its_facility_with_its_host(daemon, rfc, framing):
    transport = 'syslog-udp' if framing == ['--udp'] else 'syslog-tcp'
    extra = ['--msgid', 'ID47'] if rfc == '--rfc5424' else []
    for number in range(3):
        subprocess.run(['logger', rfc, *framing, *extra, '--server', '127.0.0.1', '--port',
                        str(daemon.ports[transport]), '--tag', 'app', 'logger says %d' % number],
                       check=True, timeout=30)
    relative = 'app/ID47.log' if extra else 'app/root.log'
    lines = daemon.wait_for_lines(relative, 3)
    assert sorted(bodies(lines)) == ['logger says 0', 'logger says 1', 'logger says 2']
    assert set(hosts(lines)) == {HOST}


@pytest.mark.parametrize('socktype, transport', [(socket.SOCK_DGRAM, 'syslog-udp'),
                                                 (socket.SOCK_STREAM, 'syslog-tcp')])
def test_python_syslog_handler_lands_with_the_peer_address_as_host(daemon, socktype, transport):
    handler = logging.handlers.SysLogHandler(('127.0.0.1', daemon.ports[transport]), socktype=socktype)
    handler.ident = 'shop: '
    if socktype == socket.SOCK_STREAM:
        handler.append_nul = False
        handler.setFormatter(logging.Formatter('%(message)s\n'))
    logger = logging.getLogger('test_syslog.%s' % transport)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning('order 42 paid')
        logger.error('order 43 failed')
    finally:
        handler.close()
    lines = daemon.wait_for_lines('shop/root.log', 2)
    assert bodies(lines, host='127.0.0.1') == ['order 42 paid', 'order 43 failed']


def test_routing_rejections_and_status_counters(daemon):
    with socket.create_connection(('127.0.0.1', daemon.ports['syslog-tcp'])) as sock:
        sock.sendall(b'<13>1 - web1 app - ID47 - one\n<13>1 - web1 nosuchapp - - - x\n<13>1 - h signed - - - y\n'
                     b'not syslog at all\n<14>Dec  1 12:00:00 web2 perhost[3]: per host\n'
                     b'30 <13>1 - - app - - - cut off')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b'<14>app: ' + b'y' * 20000, ('127.0.0.1', daemon.ports['syslog-udp']))
    assert bodies(daemon.wait_for_lines('app/ID47.log', 1), host='web1') == ['one']
    assert bodies(daemon.wait_for_lines('perhost/web2@root.log', 1), host='web2') == ['per host']
    wait_for(lambda: daemon.stats()['rejected_by_reason'].get('truncated') == 1, what='the cut-off message')
    stats = daemon.stats()
    assert stats['rejected_by_reason'] == {'unknown_app': 1, 'unsigned': 1, 'bad_syslog': 1, 'truncated': 1}
    assert stats['syslog_messages_by_listener'] == {'tcp': 5, 'udp': 1}
    status = subprocess.run(daemon.command('--status'), capture_output=True, text=True, timeout=30).stdout
    assert 'syslog messages received' in status and 'unsigned' in status


def test_syslog_is_off_unless_configured(tmp_path):
    with Loghogd(tmp_path, FACILITIES) as daemon:
        assert not [name for name in daemon.ports if name.startswith('syslog')]


def test_ipv6_listeners_take_syslog_over_udp_and_tcp(tmp_path):
    config = {'server': {'listen_ipv6_syslog': '[::1]:0'}}
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        for transport, kind in (('syslog-udp', socket.SOCK_DGRAM), ('syslog-tcp', socket.SOCK_STREAM)):
            with socket.socket(socket.AF_INET6, kind) as sock:
                sock.connect(('::1', daemon.ports[transport]))
                sock.sendall(b'<14>app: over %s\n' % transport.encode('ascii'))
        lines = daemon.wait_for_lines('app/root.log', 2)
    assert sorted(bodies(lines, host='::1')) == ['over syslog-tcp', 'over syslog-udp']


def test_oversize_message_over_tcp_is_cut_and_the_connection_goes_on(tmp_path):
    config = {'server': {'listen_ipv4_syslog': '127.0.0.1:0', 'max_message_size': '8K'}}
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        with socket.create_connection(('127.0.0.1', daemon.ports['syslog-tcp'])) as sock:
            big = b'<14>app: ' + b'z' * 20000
            sock.sendall(big + b'\n' + b'%d %s' % (len(big), big))
            sock.sendall(b'<14>app: still connected\n')
            lines = daemon.wait_for_lines('app/root.log', 3)
        assert bodies(lines) == ['z' * (8192 - 9)] * 2 + ['still connected']
        assert daemon.stats()['syslog_truncated_by_listener'] == {'tcp': 2}


@pytest.mark.parametrize('setting', ['required', 'optional'])
def test_tls_needs_a_client_certificate_of_the_ca_unless_it_is_optional(tmp_path, setting):
    pki = make_pki(tmp_path)
    config = {'server': {'listen_ipv4_syslog_tls': '127.0.0.1:0', 'pemfile': pki.server_pem,
                         'cacert': pki.ca_cert, 'syslog_tls_client_cert': setting}}
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        for client_pem in (pki.client_pem('web1'), None):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(pki.ca_cert)
            context.check_hostname = False
            if client_pem:
                context.load_cert_chain(client_pem)
            message = b'<14>app: %s' % (b'with' if client_pem else b'wout')
            try:
                with context.wrap_socket(socket.create_connection(('127.0.0.1', daemon.ports['syslog-tls']),
                                                                  timeout=5)) as sock:
                    sock.sendall(b'%d %s' % (len(message), message))
                    sock.recv(1)
            except (ssl.SSLError, OSError):
                pass
        expected = ['with'] + (['wout'] if setting == 'optional' else [])
        assert bodies(daemon.wait_for_lines('app/root.log', len(expected))) == expected
        if setting == 'required':
            wait_for(lambda: daemon.stats()['tls_failures'] == 1, what='one refused handshake')
