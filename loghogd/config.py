"""loghogd.conf turned into frozen objects, with defaults and validation from loghogd.schema.

Every error names the file, the section, the key and the line, so that an
operator can fix it without guessing. Here are only the rules that join
several keys (default ports, addresses listed twice, TLS needs certificates,
sizes that must hold others).
"""

import ipaddress
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from loghogd.formats import CLASSIC, OPTIONS, LineFormat
from loghogd.ini import ConfigError, IniFile, check_range, read_ini  # noqa: F401 (ConfigError is re-exported)
from loghogd.schema import LOGHOGD_CONF, Values, default, keys_of, sections
from loghogd.streamconfig import ConsumeConfig, ForwardConfig, consume_config, forward_config
from loghogd.values import COMPRESSOR_LEVELS

FRAME_HEADER_SIZE = 8


def _default(section: str, key: str) -> object:
    return default(LOGHOGD_CONF, section, key)


@dataclass(frozen=True)
class ListenAddress:
    """One address to listen on; port 0 asks the kernel for a free one."""
    host: str
    port: int


@dataclass(frozen=True)
class MainConfig:
    daemon: bool
    workdir: str
    logdir: str
    rundir: str
    facilities_config: str
    pidfile: str
    user: Optional[str]


@dataclass(frozen=True)
class LogConfig:
    """The daemon's own log: None filename means stderr only."""
    filename: Optional[str]
    backup_count: int
    when: str
    level: int


@dataclass(frozen=True)
class CompressorConfig:
    format: str
    level: int


@dataclass(frozen=True)
class ServerConfig:
    """[server]; the field defaults are the schema's, for building one in tests."""
    listen: Tuple[ListenAddress, ...]
    listen_ssl: Tuple[ListenAddress, ...]
    pemfile: Optional[str]
    cacert: Optional[str]
    crlfile: Optional[str]
    listen_syslog: Tuple[ListenAddress, ...] = ()
    listen_syslog_tls: Tuple[ListenAddress, ...] = ()
    syslog_tls_client_cert_required: bool = _default('server', 'syslog_tls_client_cert')
    max_message_size: int = _default('server', 'max_message_size')
    max_connections: int = _default('server', 'max_connections')
    udp_receive_buffer: int = _default('server', 'udp_receive_buffer')
    max_connections_per_address: int = _default('server', 'max_connections_per_address')
    tls_reserved_connections: int = _default('server', 'tls_reserved_connections')
    tls_handshake_timeout: float = _default('server', 'tls_handshake_timeout')
    idle_timeout: float = _default('server', 'idle_timeout')
    frame_timeout: float = _default('server', 'frame_timeout')
    max_buffered_bytes: int = _default('server', 'max_buffered_bytes')
    max_buffered_bytes_per_peer: int = _default('server', 'max_buffered_bytes_per_peer')
    max_inflated_bytes_per_second: int = _default('server', 'max_inflated_bytes_per_second')
    max_ack_clients: int = _default('server', 'max_ack_clients')
    peer_rate_limit: Optional[float] = _default('server', 'peer_rate_limit')


@dataclass(frozen=True)
class HooksConfig:
    """Post-rotate hooks (facilities.conf post_rotate): how many run at once."""
    max_running: int = _default('hooks', 'max_running')


@dataclass(frozen=True)
class StatsConfig:
    prometheus_textfile: Optional[str]


@dataclass(frozen=True)
class Config:
    path: str
    main: MainConfig
    log: LogConfig
    compressor: CompressorConfig
    server: ServerConfig
    stats: StatsConfig
    line_format: LineFormat = CLASSIC
    forward: Optional[ForwardConfig] = None
    consume: Optional[ConsumeConfig] = None
    hooks: HooksConfig = HooksConfig()


def load_config(path: str) -> Config:
    """Read loghogd.conf at `path` into a Config; ConfigError says what is wrong.

    Only reads this one file: the facilities file and the certificates are
    checked by their own loaders, so paths are resolved but not opened.
    """
    ini = read_ini(path)
    known = sections(LOGHOGD_CONF)
    for section in ini.parser.sections():
        if section not in known:
            ini.errors.append(ini.error(section, '', 'unknown section (known sections: %s)' % ', '.join(known)))
        else:
            ini.check_keys(section, keys_of(LOGHOGD_CONF, section))
    config = None
    with ini.noting():
        config = _build_config(ini)
    ini.raise_errors()
    return config


def facilities_path(path: str) -> str:
    """[main] facilities_config of a loghogd.conf that may not load, to check that file as well."""
    try:
        return Values(read_ini(path), LOGHOGD_CONF, 'main')['facilities_config']
    except ConfigError:
        return os.path.join(os.path.dirname(os.path.abspath(path)), 'facilities.conf')


def _build_config(ini: IniFile) -> Config:
    main = _main_config(Values(ini, LOGHOGD_CONF, 'main'))
    return Config(
        path=ini.path,
        main=main,
        log=_log_config(Values(ini, LOGHOGD_CONF, 'log'), main.logdir),
        compressor=_compressor_config(Values(ini, LOGHOGD_CONF, 'compressor')),
        server=_server_config(Values(ini, LOGHOGD_CONF, 'server')),
        stats=StatsConfig(prometheus_textfile=Values(ini, LOGHOGD_CONF, 'stats')['prometheus_textfile']),
        line_format=_line_format(Values(ini, LOGHOGD_CONF, 'format')),
        forward=forward_config(Values(ini, LOGHOGD_CONF, 'forward')) if ini.parser.has_section('forward') else None,
        consume=consume_config(Values(ini, LOGHOGD_CONF, 'consume')) if ini.parser.has_section('consume') else None,
        hooks=HooksConfig(max_running=Values(ini, LOGHOGD_CONF, 'hooks')['max_running']),
    )


def _line_format(values: Values) -> LineFormat:
    """[format]: the line format of every facility that does not choose its own."""
    return LineFormat(**{key: values[key] for key in OPTIONS})


def _main_config(values: Values) -> MainConfig:
    rundir = values['rundir']
    return MainConfig(
        daemon=values['daemon'],
        workdir=values['workdir'],
        logdir=values['logdir'],
        rundir=rundir,
        facilities_config=values['facilities_config'],
        pidfile=values['pidfile'] or os.path.join(rundir, 'loghogd.pid'),
        user=values['user'],
    )


def _log_config(values: Values, logdir: str) -> LogConfig:
    return LogConfig(
        filename=values['filename'] if values.given('filename') else os.path.join(logdir, 'loghogd.log'),
        backup_count=values['backup_count'],
        when=values['when'],
        level=values['level'],
    )


def _compressor_config(values: Values) -> CompressorConfig:
    compressor_format = values['format']
    levels = COMPRESSOR_LEVELS[compressor_format]
    level = values['level']
    try:
        check_range(level, levels[0], levels[-1])
    except ValueError as error:
        values.ini.errors.append(values.error('level', str(error)))  # noted: [server] is still checked
    return CompressorConfig(format=compressor_format, level=level)


def _server_config(values: Values) -> ServerConfig:
    taken: Dict[Tuple[str, int], str] = {}

    def listen(kind: str, port_key: str) -> Tuple[ListenAddress, ...]:
        port = values[port_key]
        return (_listen(values, 'listen_ipv4' + kind, port, taken)
                + _listen(values, 'listen_ipv6' + kind, port, taken))

    listen_plain = listen('', 'default_port')
    listen_ssl = listen('_ssl', 'default_port_ssl')
    listen_syslog = listen('_syslog', 'default_port_syslog')
    listen_syslog_tls = listen('_syslog_tls', 'default_port_syslog_tls')
    pemfile, cacert = values['pemfile'], values['cacert']
    for addresses, keys in ((listen_ssl, 'listen_ipv4_ssl or listen_ipv6_ssl'),
                            (listen_syslog_tls, 'listen_ipv4_syslog_tls or listen_ipv6_syslog_tls')):
        for key, value in (('pemfile', pemfile), ('cacert', cacert)):
            if addresses and value is None:
                raise values.error(key, 'required when %s lists an address' % keys)
    max_message_size = values['max_message_size']
    per_peer = _at_least(values, 'max_buffered_bytes_per_peer', max_message_size + FRAME_HEADER_SIZE,
                         'max_message_size + 8')
    return ServerConfig(
        listen=listen_plain,
        listen_ssl=listen_ssl,
        listen_syslog=listen_syslog,
        listen_syslog_tls=listen_syslog_tls,
        syslog_tls_client_cert_required=values['syslog_tls_client_cert'],
        pemfile=pemfile,
        cacert=cacert,
        crlfile=values['crlfile'],
        max_message_size=max_message_size,
        max_connections=values['max_connections'],
        udp_receive_buffer=values['udp_receive_buffer'],
        max_connections_per_address=values['max_connections_per_address'],
        tls_reserved_connections=values['tls_reserved_connections'],
        tls_handshake_timeout=values['tls_handshake_timeout'],
        idle_timeout=values['idle_timeout'],
        frame_timeout=values['frame_timeout'],
        max_buffered_bytes=_at_least(values, 'max_buffered_bytes', per_peer, 'max_buffered_bytes_per_peer'),
        max_buffered_bytes_per_peer=per_peer,
        max_inflated_bytes_per_second=values['max_inflated_bytes_per_second'],
        max_ack_clients=values['max_ack_clients'],
        peer_rate_limit=values['peer_rate_limit'],
    )


def _at_least(values: Values, key: str, low: int, low_name: str) -> int:
    """A size that must hold `low` bytes: a default below it grows to it, a value set below it is an error."""
    size = values[key]
    if size >= low:
        return size
    if values.given(key):
        raise values.error(key, '%d bytes is less than %s (%d bytes)' % (size, low_name, low))
    return low


def _listen(values: Values, key: str, default_port: int,
            taken: Dict[Tuple[str, int], str]) -> Tuple[ListenAddress, ...]:
    """The addresses of one listen_* key; the same fixed address twice is refused."""
    addresses = tuple(ListenAddress(host, default_port if port is None else port) for host, port in values[key])
    for address in addresses:
        where = (str(ipaddress.ip_address(address.host.partition('%')[0])), address.port)
        if address.port and where in taken:
            raise values.error(key, '%s port %d is already listed in %s' % (address.host, address.port, taken[where]))
        taken[where] = key
    return addresses
