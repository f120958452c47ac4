"""loghogd.conf: defaults, typed values, and an operator-readable error per mistake."""

import logging
import os
import re
from pathlib import Path
from typing import Dict, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog.protocol import DEFAULT_MAX_MESSAGE_SIZE
from loghogd.config import ConfigError, ListenAddress, load_config

REPO = Path(__file__).resolve().parent.parent


def write(directory: Path, text: str, name: str = 'loghogd.conf') -> str:
    path = directory / name
    path.write_text(text, encoding='utf-8')
    return str(path)


def config_error(directory: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(write(directory, text))
    return str(raised.value)


def test_empty_file_gives_the_safe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ''))
    assert config.path == str(tmp_path / 'loghogd.conf')
    main = config.main
    assert (main.daemon, main.user) == (False, None)
    assert (main.workdir, main.logdir, main.rundir) == ('/var/lib/loghogd', '/var/log/loghogd', '/run/loghogd')
    assert main.pidfile == '/run/loghogd/loghogd.pid'
    assert main.facilities_config == str(tmp_path / 'facilities.conf')
    assert config.log.filename == '/var/log/loghogd/loghogd.log'
    assert (config.log.backup_count, config.log.when, config.log.level) == (14, 'daily', logging.INFO)
    assert (config.compressor.format, config.compressor.level) == ('xz', 6)
    server = config.server
    assert server.listen == (ListenAddress('127.0.0.1', 5566),)
    assert server.listen_ssl == ()
    assert (server.pemfile, server.cacert, server.crlfile) == (None, None, None)
    assert server.max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    assert (server.max_connections, server.udp_receive_buffer) == (4096, 8 * 1024 * 1024)
    assert config.stats.prometheus_textfile is None


def test_shipped_development_configs_load() -> None:
    config = load_config(str(REPO / 'conf' / 'loghogd.conf'))
    assert config.main.logdir == str(REPO / 'var' / 'log')
    assert config.main.facilities_config == str(REPO / 'conf' / 'facilities.conf')
    assert config.server.listen == (ListenAddress('127.0.0.1', 5566),)
    assert config.server.listen_ssl == (ListenAddress('127.0.0.1', 5577),)
    assert config.server.pemfile == str(REPO / 'var' / 'certs' / 'loghog-server.pem')
    assert not config.log.filename.startswith(config.main.logdir + os.sep)
    from loghogd.facilities import load_facilities
    assert load_facilities(config.main.facilities_config).lookup('my-first-app', 'any.module') is not None


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / 'etc').mkdir()
    monkeypatch.chdir('/')
    config = load_config(write(tmp_path / 'etc', """
[main]
workdir = ../lib
logdir = logs
rundir = /abs/run
pidfile = run/x.pid
facilities_config = fac.conf
[log]
filename =
[server]
listen_ipv4_ssl = 127.0.0.1
pemfile = certs/server.pem
cacert = ./certs/ca.cert
crlfile = certs/ca.crl
[stats]
prometheus_textfile = ../metrics/loghogd.prom
"""))
    main = config.main
    assert main.workdir == str(tmp_path / 'lib')
    assert main.logdir == str(tmp_path / 'etc' / 'logs')
    assert main.rundir == '/abs/run'
    assert main.pidfile == str(tmp_path / 'etc' / 'run' / 'x.pid')
    assert main.facilities_config == str(tmp_path / 'etc' / 'fac.conf')
    assert config.log.filename is None
    assert config.server.pemfile == str(tmp_path / 'etc' / 'certs' / 'server.pem')
    assert config.server.cacert == str(tmp_path / 'etc' / 'certs' / 'ca.cert')
    assert config.server.crlfile == str(tmp_path / 'etc' / 'certs' / 'ca.crl')
    assert config.stats.prometheus_textfile == str(tmp_path / 'metrics' / 'loghogd.prom')


def test_addresses_with_own_ports_ipv6_and_port_zero(tmp_path: Path) -> None:
    server = load_config(write(tmp_path, """
[server]
listen_ipv4 = 127.0.0.1:0, 192.168.1.10:25566, 10.0.0.1,
listen_ipv6 = ::1, [::]:25566, [fe80::1%eth0]
default_port = 0
listen_ipv4_ssl = 0.0.0.0
listen_ipv6_ssl = [::1]:25577
default_port_ssl = 6000
pemfile = server.pem
cacert = ca.cert
""")).server
    assert server.listen == (ListenAddress('127.0.0.1', 0), ListenAddress('192.168.1.10', 25566),
                             ListenAddress('10.0.0.1', 0), ListenAddress('::1', 0),
                             ListenAddress('::', 25566), ListenAddress('fe80::1%eth0', 0))
    assert server.listen_ssl == (ListenAddress('0.0.0.0', 6000), ListenAddress('::1', 25577))


def test_comments_case_and_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
# a comment
[main]
Daemon = Yes ; inline comment
user = loghog # another
[log]
level = warning
when = 55 22 * * MON-fri
backup_count = 0
[compressor]
format = BZIP2
level = 1
[server]
max_message_size = 8K
max_connections = 1
udp_receive_buffer = 0
"""))
    assert (config.main.daemon, config.main.user) == (True, 'loghog')
    assert (config.log.level, config.log.when, config.log.backup_count) == (logging.WARNING, '55 22 * * mon-fri', 0)
    assert (config.compressor.format, config.compressor.level) == ('bzip2', 1)
    assert (config.server.max_message_size, config.server.max_connections) == (8192, 1)
    assert config.server.udp_receive_buffer == 0


def test_log_filename_left_out_is_in_logdir_and_empty_is_stderr_only(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[main]\nlogdir = /l\n')).log.filename == '/l/loghogd.log'
    assert load_config(write(tmp_path, '[log]\nfilename = ; stderr\n')).log.filename is None
    assert load_config(write(tmp_path, '[log]\nfilename = own.log\n')).log.filename == str(tmp_path / 'own.log')


def test_percent_signs_are_not_interpolated(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[main]\nuser = %(x)s\n')).main.user == '%(x)s'


def assert_located(message: str, path: str, line: Optional[int], section: str, key: str) -> None:
    assert message.startswith(path + (', line %d' % line if line else '')), message
    assert ('[%s] %s:' % (section, key) if key else '[%s]:' % section) in message, message


# One case per kind of mistake: (config text, line, section, key, words the message must hold)
ERRORS = {
    'bad port': ('[main]\n\n[server]\n\ndefault_port = abc\n', 5, 'server', 'default_port',
                 "'abc' is not a port number (0-65535)"),
    'port too big': ('[server]\ndefault_port_ssl = 65536\n', 2, 'server', 'default_port_ssl', 'port number'),
    'unknown key': ('[main]\ndeamon = yes\n', 2, 'main', 'deamon', 'unknown key'),
    'unknown section': ('[main]\n[sever]\n', 2, 'sever', '', 'unknown section'),
    'default section': ('[DEFAULT]\nlogdir = /x\n', 1, 'DEFAULT', '', 'unknown section'),
    'duplicate key': ('[main]\ndaemon = no\ndaemon = yes\n', 3, 'main', 'daemon', 'twice'),
    'duplicate section': ('[log]\n[main]\n[log]\n', 3, 'log', '', 'twice'),
    'bad boolean': ('[main]\ndaemon = maybe\n', 2, 'main', 'daemon', 'yes or no'),
    'empty required path': ('[main]\nlogdir =\n', 2, 'main', 'logdir', 'must not be empty'),
    'bad user': ('[main]\nuser = log hog\n', 2, 'main', 'user', 'not a user name'),
    'bad level': ('[log]\nlevel = LOUD\n', 2, 'log', 'level', 'not a level'),
    'bad when': ('[log]\nwhen = @reboot\n', 2, 'log', 'when', '@reboot'),
    'when size': ('[log]\nwhen = size\n', 2, 'log', 'when', 'max_size'),
    'negative backup_count': ('[log]\nbackup_count = -1\n', 2, 'log', 'backup_count', 'whole number'),
    'bad compressor': ('[compressor]\nformat = zip\n', 2, 'compressor', 'format', 'xz, zstd, gzip, bzip2'),
    'compressor level': ('[compressor]\nlevel = 10\n', 2, 'compressor', 'level', 'out of range'),
    'gzip level 0': ('[compressor]\nformat = gzip\nlevel = 0\n', 3, 'compressor', 'level', 'from 1 to 9'),
    'bad ipv4': ('[server]\nlisten_ipv4 = 127.0.0.1, localhost\n', 2, 'server', 'listen_ipv4', 'not an IPv4'),
    'ipv6 in ipv4': ('[server]\nlisten_ipv4 = ::1\n', 2, 'server', 'listen_ipv4', 'not an IPv4'),
    'ipv4 in ipv6': ('[server]\nlisten_ipv6 = 127.0.0.1\n', 2, 'server', 'listen_ipv6', 'not an IPv6'),
    'unbracketed ipv6 port': ('[server]\nlisten_ipv6 = [::1:5566\n', 2, 'server', 'listen_ipv6', 'not an IPv6'),
    'bad own port': ('[server]\nlisten_ipv6 = [::1]:x\n', 2, 'server', 'listen_ipv6', 'port number'),
    'address twice': ('[server]\nlisten_ipv4 = 127.0.0.1\nlisten_ipv4_ssl = 127.0.0.1:5566\n'
                      'pemfile = a\ncacert = b\n', 3, 'server', 'listen_ipv4_ssl', 'already listed'),
    'tls without pemfile': ('[server]\nlisten_ipv6_ssl = ::1\ncacert = ca.cert\n', 1, 'server', 'pemfile',
                            'required'),
    'tls without cacert': ('[server]\nlisten_ipv4_ssl = 127.0.0.1\npemfile = s.pem\ncacert =\n', 4,
                           'server', 'cacert', 'required'),
    'message size too small': ('[server]\nmax_message_size = 8191\n', 2, 'server', 'max_message_size',
                               'out of range'),
    'bad message size': ('[server]\nmax_message_size = lots\n', 2, 'server', 'max_message_size', 'not a size'),
    'no connections': ('[server]\nmax_connections = 0\n', 2, 'server', 'max_connections', 'at least 1'),
    'no ack clients': ('[server]\nmax_ack_clients = 0\n', 2, 'server', 'max_ack_clients', 'at least 1'),
    'bad peer_rate_limit': ('[server]\npeer_rate_limit = 10/min\n', 2, 'server', 'peer_rate_limit', 'per second'),
    'no hooks at once': ('[hooks]\nmax_running = 0\n', 2, 'hooks', 'max_running', 'from 1 to 256'),
    'zstd level': ('[compressor]\nformat = zstd\nlevel = 20\n', 3, 'compressor', 'level', 'from 1 to 19'),
    'misspelled key': ('[server]\nidle_timout = 5\n', 2, 'server', 'idle_timout', 'did you mean idle_timeout?'),
    'bad buffer': ('[server]\nudp_receive_buffer = 1.5M\n', 2, 'server', 'udp_receive_buffer', 'not a size'),
    'buffer over a C int': ('[server]\nudp_receive_buffer = 2G\n', 2, 'server', 'udp_receive_buffer',
                            'out of range'),
    'buffer over 1G': ('[server]\nudp_receive_buffer = 1073741825\n', 2, 'server', 'udp_receive_buffer',
                       'from 0 to 1073741824'),
}


@pytest.mark.parametrize('name', sorted(ERRORS))
def test_each_mistake_names_file_line_section_and_key(tmp_path: Path, name: str) -> None:
    text, line, section, key, words = ERRORS[name]
    message = config_error(tmp_path, text)
    assert_located(message, str(tmp_path / 'loghogd.conf'), line, section, key)
    assert words in message


def test_text_before_any_section(tmp_path: Path) -> None:
    message = config_error(tmp_path, '; fine\ndaemon = yes\n[main]\n')
    assert message.startswith('%s, line 2: ' % (tmp_path / 'loghogd.conf'))
    assert 'daemon = yes' in message and '[section]' in message


def test_line_that_is_no_key_value(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[main]\ndaemon = yes\njust words\n')
    assert message.startswith('%s, line 3: ' % (tmp_path / 'loghogd.conf'))
    assert 'just words' in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / 'nope.conf')) + ': no such file'):
        load_config(str(tmp_path / 'nope.conf'))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path)) + ': cannot read'):
        load_config(str(tmp_path))


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / 'loghogd.conf'
    path.write_bytes(b'[main]\nuser = \xff\n')
    with pytest.raises(ConfigError, match='not UTF-8'):
        load_config(str(path))


# Valid values for generated configs, each with the typed value it must become.
PORT = st.integers(0, 65535)
VALID: Dict[str, Dict[str, st.SearchStrategy]] = {
    'main': {
        'daemon': st.sampled_from([('yes', True), ('No', False), ('true', True), ('off', False), ('1', True)]),
        'user': st.from_regex(r'[a-z_][a-z0-9_-]{0,15}', fullmatch=True).map(lambda user: (user, user)),
    },
    'log': {
        'backup_count': st.integers(0, 10 ** 6).map(lambda n: (str(n), n)),
        'level': st.sampled_from(['debug', 'INFO', 'Warning', 'ERROR', 'critical']).map(
            lambda name: (name, getattr(logging, name.upper()))),
        'when': st.sampled_from([('Midnight', 'daily'), ('hourly', 'hourly'), ('0 */2 * * *', '0 */2 * * *'),
                                 ('ANNUALLY', 'yearly')]),
    },
    'compressor': {
        'level': st.integers(1, 9).map(lambda n: (str(n), n)),
    },
    'server': {
        'max_message_size': st.integers(8192, 1024 ** 3).map(lambda n: (str(n), n)),
        'max_connections': st.integers(1, 10 ** 6).map(lambda n: (str(n), n)),
        'udp_receive_buffer': st.integers(1, 1024).map(lambda n: ('%dM' % n, n * 1024 ** 2)),
        'max_ack_clients': st.integers(1, 10 ** 7).map(lambda n: (str(n), n)),
    },
}


@st.composite
def valid_configs(draw: st.DrawFn) -> dict:
    chosen = {}
    for section, keys in VALID.items():
        for key in draw(st.lists(st.sampled_from(sorted(keys)), unique=True)):
            chosen[(section, key)] = draw(keys[key])
    return chosen


def render(values: dict) -> str:
    lines = []
    for section in VALID:
        lines.append('[%s]' % section)
        lines.extend('%s = %s' % (key, text) for (in_section, key), (text, _) in values.items()
                     if in_section == section)
    return '\n'.join(lines) + '\n'


@given(values=valid_configs(), default_port=PORT, own_ports=st.lists(st.one_of(st.none(), PORT), max_size=4))
@settings(max_examples=150)
def test_generated_valid_configs_load_to_their_typed_values(tmp_path: Path, values: dict, default_port: int,
                                                            own_ports: list) -> None:
    addresses = ['127.0.0.%d%s' % (n + 1, '' if port is None else ':%d' % port) for n, port in enumerate(own_ports)]
    text = render(values).replace('[server]\n', '[server]\ndefault_port = %d\nlisten_ipv4 = %s\n'
                                  % (default_port, ', '.join(addresses)))
    config = load_config(write(tmp_path, text))
    for (section, key), (_, expected) in values.items():
        assert getattr(getattr(config, section), key) == expected, (section, key)
    assert config.server.listen == tuple(ListenAddress('127.0.0.%d' % (n + 1), default_port if port is None else port)
                                         for n, port in enumerate(own_ports))


ALL_KEYS = [(section, key) for section, keys in {
    'main': ['daemon', 'workdir', 'logdir', 'rundir', 'facilities_config', 'pidfile', 'user'],
    'log': ['filename', 'backup_count', 'when', 'level'],
    'compressor': ['format', 'level'],
    'server': ['listen_ipv4', 'listen_ipv6', 'default_port', 'listen_ipv4_ssl', 'listen_ipv6_ssl',
               'default_port_ssl', 'pemfile', 'cacert', 'crlfile', 'max_message_size', 'max_connections',
               'udp_receive_buffer', 'max_connections_per_address', 'tls_reserved_connections',
               'tls_handshake_timeout', 'idle_timeout', 'frame_timeout', 'max_buffered_bytes',
               'max_buffered_bytes_per_peer', 'max_inflated_bytes_per_second'],
    'stats': ['prometheus_textfile'],
}.items() for key in keys]


@given(target=st.sampled_from(ALL_KEYS),
       garbage=st.text(st.characters(blacklist_categories=('Cs',)), max_size=30).filter(lambda t: '\n' not in t))
@settings(max_examples=400)
def test_garbage_values_load_or_raise_config_error_naming_the_key(tmp_path: Path, target: tuple,
                                                                   garbage: str) -> None:
    section, key = target
    try:
        load_config(write(tmp_path, '[%s]\n%s = %s\n' % (section, key, garbage)))
    except ConfigError as error:
        message = str(error)
        assert message.startswith(str(tmp_path / 'loghogd.conf')), message


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_any_file_content_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / 'loghogd.conf'
    path.write_text(text, encoding='utf-8', errors='surrogatepass')
    try:
        load_config(str(path))
    except ConfigError as error:
        assert str(path) in str(error)


def test_syslog_listeners_are_off_by_default_and_take_the_address_syntax(tmp_path: Path) -> None:
    server = load_config(write(tmp_path, '')).server
    assert (server.listen_syslog, server.listen_syslog_tls, server.syslog_tls_client_cert_required) == ((), (), True)
    server = load_config(write(tmp_path, """
[server]
listen_ipv4_syslog = 0.0.0.0, 127.0.0.1:1514
listen_ipv6_syslog = ::1
listen_ipv4_syslog_tls = 127.0.0.1
listen_ipv6_syslog_tls = [::1]:16514
default_port_syslog_tls = 7514
syslog_tls_client_cert = Optional
pemfile = server.pem
cacert = ca.cert
""")).server
    assert server.listen_syslog == (ListenAddress('0.0.0.0', 514), ListenAddress('127.0.0.1', 1514),
                                    ListenAddress('::1', 514))
    assert server.listen_syslog_tls == (ListenAddress('127.0.0.1', 7514), ListenAddress('::1', 16514))
    assert server.syslog_tls_client_cert_required is False


@pytest.mark.parametrize('text, message', [
    ('listen_ipv4_syslog_tls = 127.0.0.1\npemfile = s.pem\n', '[server] cacert: required when listen_ipv4_syslog_tls'),
    ('syslog_tls_client_cert = maybe\n', "[server] syslog_tls_client_cert: 'maybe' is neither required nor optional"),
    ('listen_ipv4 = 127.0.0.1:514\nlisten_ipv4_syslog = 127.0.0.1\n',
     '[server] listen_ipv4_syslog: 127.0.0.1 port 514 is already listed in listen_ipv4'),
    ('default_port_syslog = 70000\n', "[server] default_port_syslog: '70000' is not a port number"),
])
def test_syslog_option_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert message in config_error(tmp_path, '[server]\n' + text)
