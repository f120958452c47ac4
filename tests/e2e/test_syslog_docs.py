"""Every snippet of docs/syslog.md, run against a real loghogd: the page says what works."""

import os
import re
import socket
import subprocess
import sys

import pytest

from loghogd.config import ListenAddress, load_config
from tests.support.daemon import REPO, Loghogd, bodies, wait_for
from tests.support.peers import Nginx, Peer, Rsyslog, accepts
from tests.support.pki import make_pki

PAGE = os.path.join(REPO, 'docs', 'syslog.md')
SNIPPET = re.compile(r'<!-- snippet: (\S+) -->\n```[a-z.]*\n(.*?)```', re.S)
HOST = socket.gethostname()

pytestmark = pytest.mark.slow


def snippets():
    with open(PAGE, encoding='utf-8') as stream:
        return dict(SNIPPET.findall(stream.read()))


def snippet(name: str, port: int) -> str:
    """The snippet as the test runs it: loghogd at 127.0.0.1 on the test's port."""
    return re.sub(r'\b(514|6514)\b', str(port), snippets()[name].replace('logs.example.com', '127.0.0.1'))


@pytest.fixture
def daemon(tmp_path):
    with Loghogd(tmp_path, snippets()['facilities.conf'],
                 config={'server': {'listen_ipv4_syslog': '127.0.0.1:0'}}) as running:
        yield running


def test_the_page_has_every_snippet_this_file_runs():
    assert set(snippets()) == {'loghogd.conf', 'facilities.conf', 'logger', 'rsyslog-tcp', 'rsyslog-tls', 'nginx',
                               'gunicorn', 'syslog-handler-udp', 'syslog-handler-tcp'}


def test_loghogd_conf_snippet(tmp_path):
    path = tmp_path / 'loghogd.conf'
    path.write_text(snippets()['loghogd.conf'] + 'pemfile = server.pem\ncacert = ca.cert\n', encoding='utf-8')
    server = load_config(str(path)).server
    assert server.listen_syslog == (ListenAddress('0.0.0.0', 514),)
    assert server.listen_syslog_tls == (ListenAddress('0.0.0.0', 6514),)
    assert server.syslog_tls_client_cert_required


def test_logger_snippet(daemon):
    for line in snippets()['logger'].splitlines():
        transport = 'syslog-udp' if '--udp' in line else 'syslog-tcp'
        command = re.sub(r'--port 514', '--port %d' % daemon.ports[transport], line)
        subprocess.run(command.replace('logs.example.com', '127.0.0.1'), shell=True, check=True, timeout=30)
    assert bodies(daemon.wait_for_lines('myapp/root.log', 3), host=HOST) == ['backup finished'] * 3


def test_rsyslog_tcp_snippet(daemon, tmp_path):
    with Rsyslog(tmp_path, snippet('rsyslog-tcp', daemon.ports['syslog-tcp'])) as rsyslog:
        rsyslog.send('myapp', 'through rsyslog')
        assert bodies(daemon.wait_for_lines('myapp/root.log', 1), host=HOST) == ['through rsyslog']


def test_rsyslog_tls_snippet(tmp_path):
    pki = make_pki(tmp_path)
    config = {'server': {'listen_ipv4_syslog_tls': '127.0.0.1:0', 'pemfile': pki.server_pem, 'cacert': pki.ca_cert}}
    with Loghogd(tmp_path, snippets()['facilities.conf'], config=config) as daemon:
        rules = snippet('rsyslog-tls', daemon.ports['syslog-tls'])
        rules = rules.replace('/etc/rsyslog.d/loghog-ca.cert', pki.ca_cert)
        rules = rules.replace('/etc/rsyslog.d/web1.pem', pki.client_pem('web1'))
        with Rsyslog(tmp_path, rules) as rsyslog:
            rsyslog.send('myapp', 'through rsyslog over TLS')
            assert bodies(daemon.wait_for_lines('myapp/root.log', 1), host=HOST) == ['through rsyslog over TLS']


def test_nginx_snippet(daemon, tmp_path):
    with Nginx(tmp_path, snippet('nginx', daemon.ports['syslog-udp'])) as nginx:
        assert b'hello' in nginx.get('/from-the-docs')
        [body] = bodies(daemon.wait_for_lines('nginx/root.log', 1), host=HOST)
    assert '"GET /from-the-docs HTTP/1.0" 200' in body


class Gunicorn(Peer):
    """gunicorn as the docs start it, serving shop.wsgi on a UNIX socket."""

    def __init__(self, directory: str, command: str) -> None:
        super().__init__(directory, 'gunicorn')
        os.makedirs(os.path.join(self.directory, 'shop'), exist_ok=True)
        with open(os.path.join(self.directory, 'shop', 'wsgi.py'), 'w', encoding='utf-8') as stream:
            stream.write('def application(environ, start_response):\n'
                         '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
                         '    return [b"shop\\n"]\n')
        self.socket_path = os.path.join(self.directory, 'http.sock')
        self.arguments = command.split() + ['--bind', 'unix:' + self.socket_path, '--chdir', self.directory]

    def command(self):
        return self.arguments

    def ready(self) -> bool:
        return accepts(self.socket_path)


def test_gunicorn_snippet(daemon, tmp_path):
    with Gunicorn(tmp_path, snippet('gunicorn', daemon.ports['syslog-udp'])) as gunicorn:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(gunicorn.socket_path)
            sock.sendall(b'GET /gunicorn-page HTTP/1.0\r\n\r\n')
            wait_for(lambda: b'shop' in sock.recv(65536), what='the response')
        [access] = bodies(daemon.wait_for_lines('gunicorn.shop.access/root.log', 1), host='127.0.0.1')
        errors = bodies(daemon.wait_for_lines('gunicorn.shop.error/root.log', 1), host='127.0.0.1')
    assert 'GET /gunicorn-page' in access
    assert any('Listening at' in line for line in errors)


@pytest.mark.parametrize('name, transport', [('syslog-handler-udp', 'syslog-udp'),
                                             ('syslog-handler-tcp', 'syslog-tcp')])
def test_syslog_handler_snippets(daemon, name, transport):
    subprocess.run([sys.executable, '-c', snippet(name, daemon.ports[transport])], check=True, timeout=30)
    assert bodies(daemon.wait_for_lines('myapp/root.log', 1), host='127.0.0.1') == ['disk almost full']
