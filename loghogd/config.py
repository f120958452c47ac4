"""loghogd.conf: defaults, types and validation, turned into frozen objects.

Every error names the file, the section, the key and (where configparser
knows it) the line, so that an operator can fix it without guessing.
"""

import configparser
import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from loghog.protocol import DEFAULT_MAX_MESSAGE_SIZE
from loghogd.formats import CLASSIC, OPTIONS, LineFormat, parse_option
from loghogd.schedule import parse_rotate, parse_size


class ConfigError(Exception):
    """A configuration file is wrong; the message is for the operator."""


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
    listen: Tuple[ListenAddress, ...]
    listen_ssl: Tuple[ListenAddress, ...]
    pemfile: Optional[str]
    cacert: Optional[str]
    crlfile: Optional[str]
    listen_syslog: Tuple[ListenAddress, ...] = ()
    listen_syslog_tls: Tuple[ListenAddress, ...] = ()
    syslog_tls_client_cert_required: bool = True
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_connections: int = 4096
    udp_receive_buffer: int = 8 * 1024 * 1024
    max_connections_per_address: int = 256
    tls_reserved_connections: int = 1024
    tls_handshake_timeout: float = 5.0
    idle_timeout: float = 60.0
    frame_timeout: float = 60.0
    max_buffered_bytes: int = 64 * 1024 * 1024
    max_buffered_bytes_per_peer: int = 8 * 1024 * 1024
    max_inflated_bytes_per_second: int = 8 * 1024 * 1024
    max_ack_clients: int = 100000


@dataclass(frozen=True)
class StatsConfig:
    prometheus_textfile: Optional[str] = None


@dataclass(frozen=True)
class Config:
    path: str
    main: MainConfig
    log: LogConfig
    compressor: CompressorConfig
    server: ServerConfig
    stats: StatsConfig = field(default_factory=StatsConfig)
    line_format: LineFormat = CLASSIC


MIN_MAX_MESSAGE_SIZE = 8192
FRAME_HEADER_SIZE = 8
MAX_TIMEOUT = 86400.0
MAX_MAX_MESSAGE_SIZE = 1024 ** 3
MAX_UDP_RECEIVE_BUFFER = 1024 ** 3
COMPRESSOR_LEVELS = {'xz': range(0, 10), 'gzip': range(1, 10), 'bzip2': range(1, 10)}
LOG_LEVELS = {name: getattr(logging, name) for name in ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')}

_NO_DEFAULT_SECTION = '\0no default section'
_HEADER = re.compile(r'\[(?P<name>.+)\]')
_KEY = re.compile(r'(?P<key>[^=:]*?)\s*[=:]')
_INLINE_COMMENT = re.compile(r'\s[;#].*$')
_DIGITS = re.compile(r'[0-9]+')
_SECONDS = re.compile(r'[0-9]+(\.[0-9]+)?')

T = TypeVar('T')


class IniFile:
    """A strictly parsed INI file that remembers the line of each section and key.

    configparser keeps no line numbers, so a light scan of the same text
    records them; they only decorate error messages.
    """

    def __init__(self, path: str, parser: configparser.ConfigParser, lines: Dict[Tuple[str, str], int]) -> None:
        self.path = path
        self.parser = parser
        self._lines = lines

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)

    def line(self, section: str, key: str = '') -> Optional[int]:
        """Where `[section]` (key '') or its `key` was written, if known."""
        return self._lines.get((section, key))

    def error(self, section: str, key: str, message: str) -> ConfigError:
        """A ConfigError naming this file, the line, [section] and key."""
        return ConfigError(_located(self.path, self.line(section, key) or self.line(section), section, key, message))

    def check_keys(self, section: str, known: List[str]) -> None:
        """Unknown keys are typos that would silently do nothing: refuse them."""
        for key in self.parser[section]:
            if key not in known:
                raise self.error(section, key, 'unknown key (known keys: %s)' % ', '.join(known))

    def convert(self, section: str, key: str, raw: str, converter: Callable[[str], T]) -> T:
        """converter(raw), its ValueError turned into a located ConfigError."""
        try:
            return converter(raw)
        except ValueError as error:
            raise self.error(section, key, str(error)) from None


def _located(path: str, line: Optional[int], section: str, key: str, message: str) -> str:
    where = path if line is None else '%s, line %d' % (path, line)
    if section:
        where += ', [%s]%s' % (section, ' ' + key if key else '')
    return '%s: %s' % (where, message)


def read_ini(path: str) -> IniFile:
    """Parse `path` strictly: no interpolation, ';'/'#' comments, no duplicates.

    Every problem, from a missing file to a duplicate key, is a ConfigError.
    """
    path = os.path.abspath(path)
    try:
        with open(path, encoding='utf-8') as ini_file:
            text = ini_file.read()
    except FileNotFoundError:
        raise ConfigError('%s: no such file' % path) from None
    except UnicodeDecodeError as error:
        raise ConfigError('%s: not UTF-8 text (byte %d)' % (path, error.start)) from None
    except OSError as error:
        raise ConfigError('%s: cannot read: %s' % (path, error.strerror or error)) from None
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(';', '#'), comment_prefixes=(';', '#'),
        strict=True, empty_lines_in_values=False, default_section=_NO_DEFAULT_SECTION)
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as error:
        raise ConfigError(_located(path, error.lineno, error.section, '', 'section appears twice')) from None
    except configparser.DuplicateOptionError as error:
        raise ConfigError(_located(path, error.lineno, error.section, error.option,
                                   'key appears twice in this section')) from None
    except configparser.MissingSectionHeaderError as error:
        raise ConfigError(_located(path, error.lineno, '', '',
                                   '%r comes before any [section] header' % error.line.strip())) from None
    except configparser.ParsingError as error:
        lineno = error.errors[0][0]
        lines = text.split('\n')
        line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ''
        raise ConfigError(_located(path, lineno, '', '', 'cannot parse %r: expected [section], '
                                   'key = value or a comment' % line)) from None
    except configparser.Error as error:
        raise ConfigError('%s: %s' % (path, error)) from None
    return IniFile(path, parser, _scan_lines(text, parser.optionxform))


def _scan_lines(text: str, optionxform: Callable[[str], str]) -> Dict[Tuple[str, str], int]:
    """(section, key) -> line number; key '' is the section header's line."""
    lines: Dict[Tuple[str, str], int] = {}
    section = ''
    for number, line in enumerate(text.split('\n'), start=1):
        stripped = _INLINE_COMMENT.sub('', line.strip())
        if not stripped or stripped[0] in ';#' or (line[:1].isspace() and section):
            continue
        header = _HEADER.match(stripped)
        if header:
            section = header.group('name')
            lines.setdefault((section, ''), number)
            continue
        key = _KEY.match(stripped)
        if key and section:
            lines.setdefault((section, optionxform(key.group('key').strip())), number)
    return lines


_DEFAULTS: Dict[str, Dict[str, str]] = {
    'main': {
        'daemon': 'no',
        'workdir': '/var/lib/loghogd',
        'logdir': '/var/log/loghogd',
        'rundir': '/run/loghogd',
        'facilities_config': 'facilities.conf',
        'pidfile': '',
        'user': '',
    },
    'log': {
        'filename': '',
        'backup_count': '14',
        'when': 'daily',
        'level': 'INFO',
    },
    'compressor': {
        'format': 'xz',
        'level': '6',
    },
    'server': {
        'listen_ipv4': '127.0.0.1',
        'listen_ipv6': '',
        'default_port': '5566',
        'listen_ipv4_ssl': '',
        'listen_ipv6_ssl': '',
        'default_port_ssl': '5577',
        'pemfile': '',
        'cacert': '',
        'crlfile': '',
        'listen_ipv4_syslog': '',
        'listen_ipv6_syslog': '',
        'default_port_syslog': '514',
        'listen_ipv4_syslog_tls': '',
        'listen_ipv6_syslog_tls': '',
        'default_port_syslog_tls': '6514',
        'syslog_tls_client_cert': 'required',
        'max_message_size': str(DEFAULT_MAX_MESSAGE_SIZE),
        'max_connections': '4096',
        'udp_receive_buffer': str(8 * 1024 * 1024),
        'max_connections_per_address': '256',
        'tls_reserved_connections': '1024',
        'tls_handshake_timeout': '5',
        'idle_timeout': '60',
        'frame_timeout': '60',
        'max_buffered_bytes': '64M',
        'max_buffered_bytes_per_peer': '8M',
        'max_inflated_bytes_per_second': '8M',
        'max_ack_clients': '100000',
    },
    'stats': {
        'prometheus_textfile': '',
    },
    'format': {key: getattr(CLASSIC, key) for key in OPTIONS},
}
"""Every section and key loghogd.conf may hold, with its default as text.

Empty [main] pidfile means <rundir>/loghogd.pid. [log] filename left out
means <logdir>/loghogd.log; set but empty, stderr only (None).
"""


class _Section:
    """One section's values (file or default) and located conversions."""

    def __init__(self, ini: IniFile, name: str) -> None:
        self.ini = ini
        self.name = name
        self._values = dict(_DEFAULTS[name])
        if ini.parser.has_section(name):
            self._values.update(ini.parser[name])

    def raw(self, key: str) -> str:
        return self._values[key].strip()

    def given(self, key: str) -> bool:
        """Whether the file sets `key` (possibly to an empty value)."""
        return self.ini.parser.has_option(self.name, key)

    def get(self, key: str, converter: Callable[[str], T]) -> T:
        return self.ini.convert(self.name, key, self.raw(key), converter)

    def path(self, key: str) -> Optional[str]:
        """An absolute path (relative to the config file's directory), None if empty."""
        return self.get(key, lambda raw: resolve_path(self.ini.directory, raw))

    def required_path(self, key: str) -> str:
        resolved = self.path(key)
        if resolved is None:
            raise self.ini.error(self.name, key, 'must not be empty')
        return resolved


def resolve_path(directory: str, raw: str) -> Optional[str]:
    """`raw` made absolute against `directory`; None for an empty value."""
    if not raw:
        return None
    if '\0' in raw or '\n' in raw:
        raise ValueError('%r is not a usable path' % raw)
    return os.path.normpath(os.path.join(directory, raw))


def parse_bool(raw: str) -> bool:
    """yes/no, true/false, on/off or 1/0, as configparser spells booleans."""
    try:
        return configparser.ConfigParser.BOOLEAN_STATES[raw.lower()]
    except KeyError:
        raise ValueError('%r is not yes or no' % raw) from None


def parse_int(raw: str, low: int, high: Optional[int] = None) -> int:
    """A plain decimal integer in [low, high]."""
    if not _DIGITS.fullmatch(raw):
        raise ValueError('%r is not a whole number' % raw)
    number = int(raw)
    if number < low or (high is not None and number > high):
        bound = 'at least %d' % low if high is None else 'from %d to %d' % (low, high)
        raise ValueError('%d is out of range: must be %s' % (number, bound))
    return number


def parse_seconds(raw: str, low: float, high: float) -> float:
    """Seconds as a plain decimal number (`5`, `0.5`) in [low, high]."""
    if not _SECONDS.fullmatch(raw):
        raise ValueError('%r is not a number of seconds' % raw)
    seconds = float(raw)
    if not low <= seconds <= high:
        raise ValueError('%s is out of range: must be from %g to %g seconds' % (raw, low, high))
    return seconds


def parse_port(raw: str) -> int:
    """0-65535; 0 lets the kernel choose a free port."""
    if not _DIGITS.fullmatch(raw) or int(raw) > 65535:
        raise ValueError('%r is not a port number (0-65535)' % raw)
    return int(raw)


def parse_addresses(raw: str, version: int, default_port: int) -> List[ListenAddress]:
    """Comma separated IPv4 or IPv6 addresses, each with an optional own port.

    IPv4: `10.0.0.1` or `10.0.0.1:25566`. IPv6: `::1`, `[::1]` or
    `[::1]:25577` (a port needs the brackets).
    """
    addresses = []
    for item in (part.strip() for part in raw.replace('\n', ',').split(',')):
        if not item:
            continue
        host, port_text = _split_host_port(item, version)
        try:
            ipaddress.IPv4Address(host) if version == 4 else ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError('%r is not an IPv%d address' % (item, version)) from None
        port = default_port if port_text is None else parse_port(port_text)
        addresses.append(ListenAddress(host, port))
    return addresses


def _split_host_port(item: str, version: int) -> Tuple[str, Optional[str]]:
    if version == 4:
        host, colon, port = item.partition(':')
        return host, port if colon else None
    if item.startswith('['):
        match = re.fullmatch(r'\[([^\]]*)\](?::(.*))?', item)
        if not match:
            raise ValueError('%r is not an IPv6 address: write [address] or [address]:port' % item)
        return match.group(1), match.group(2)
    return item, None


def load_config(path: str) -> Config:
    """Read loghogd.conf at `path` into a Config; ConfigError says what is wrong.

    Only reads this one file: the facilities file and the certificates are
    checked by their own loaders, so paths are resolved but not opened.
    """
    ini = read_ini(path)
    for section in ini.parser.sections():
        if section not in _DEFAULTS:
            raise ini.error(section, '', 'unknown section (known sections: %s)' % ', '.join(_DEFAULTS))
        ini.check_keys(section, list(_DEFAULTS[section]))
    main = _main_config(_Section(ini, 'main'))
    return Config(
        path=ini.path,
        main=main,
        log=_log_config(_Section(ini, 'log'), main.logdir),
        compressor=_compressor_config(_Section(ini, 'compressor')),
        server=_server_config(_Section(ini, 'server')),
        stats=StatsConfig(prometheus_textfile=_Section(ini, 'stats').path('prometheus_textfile')),
        line_format=_line_format(_Section(ini, 'format')),
    )


def _line_format(section: _Section) -> LineFormat:
    """[format]: the line format of every facility that does not choose its own."""
    return LineFormat(**{key: section.get(key, lambda raw, key=key: parse_option(key, raw)) for key in OPTIONS})


def _main_config(section: _Section) -> MainConfig:
    rundir = section.required_path('rundir')
    return MainConfig(
        daemon=section.get('daemon', parse_bool),
        workdir=section.required_path('workdir'),
        logdir=section.required_path('logdir'),
        rundir=rundir,
        facilities_config=section.required_path('facilities_config'),
        pidfile=section.path('pidfile') or os.path.join(rundir, 'loghogd.pid'),
        user=section.get('user', _parse_user),
    )


def _parse_user(raw: str) -> Optional[str]:
    """A user name or number to run as; None keeps the starting user."""
    if any(char.isspace() or char in ':/' for char in raw):
        raise ValueError('%r is not a user name' % raw)
    return raw or None


def _log_config(section: _Section, logdir: str) -> LogConfig:
    return LogConfig(
        filename=section.path('filename') if section.given('filename') else os.path.join(logdir, 'loghogd.log'),
        backup_count=section.get('backup_count', lambda raw: parse_int(raw, 0)),
        when=section.get('when', _parse_log_when),
        level=section.get('level', _parse_log_level),
    )


def _parse_log_when(raw: str) -> str:
    schedule = parse_rotate(raw)
    if schedule.size_only:
        raise ValueError("'size' needs a max_size, which the internal log has not; use a schedule")
    return schedule.spec


def _parse_log_level(raw: str) -> int:
    try:
        return LOG_LEVELS[raw.upper()]
    except KeyError:
        raise ValueError('%r is not a level (%s)' % (raw, ', '.join(LOG_LEVELS))) from None


def _compressor_config(section: _Section) -> CompressorConfig:
    compressor_format = section.get('format', _parse_compressor_format)
    levels = COMPRESSOR_LEVELS[compressor_format]
    return CompressorConfig(
        format=compressor_format,
        level=section.get('level', lambda raw: parse_int(raw, levels[0], levels[-1])),
    )


def _parse_compressor_format(raw: str) -> str:
    if raw.lower() not in COMPRESSOR_LEVELS:
        raise ValueError('%r is not a compressor (%s)' % (raw, ', '.join(COMPRESSOR_LEVELS)))
    return raw.lower()


def _server_config(section: _Section) -> ServerConfig:
    port = section.get('default_port', parse_port)
    port_ssl = section.get('default_port_ssl', parse_port)
    taken: Dict[Tuple[str, int], str] = {}
    listen = (_listen(section, 'listen_ipv4', 4, port, taken)
              + _listen(section, 'listen_ipv6', 6, port, taken))
    listen_ssl = (_listen(section, 'listen_ipv4_ssl', 4, port_ssl, taken)
                  + _listen(section, 'listen_ipv6_ssl', 6, port_ssl, taken))
    port_syslog = section.get('default_port_syslog', parse_port)
    port_syslog_tls = section.get('default_port_syslog_tls', parse_port)
    listen_syslog = (_listen(section, 'listen_ipv4_syslog', 4, port_syslog, taken)
                     + _listen(section, 'listen_ipv6_syslog', 6, port_syslog, taken))
    listen_syslog_tls = (_listen(section, 'listen_ipv4_syslog_tls', 4, port_syslog_tls, taken)
                         + _listen(section, 'listen_ipv6_syslog_tls', 6, port_syslog_tls, taken))
    pemfile, cacert = section.path('pemfile'), section.path('cacert')
    for addresses, keys in ((listen_ssl, 'listen_ipv4_ssl or listen_ipv6_ssl'),
                            (listen_syslog_tls, 'listen_ipv4_syslog_tls or listen_ipv6_syslog_tls')):
        for key, value in (('pemfile', pemfile), ('cacert', cacert)):
            if addresses and value is None:
                raise section.ini.error(section.name, key, 'required when %s lists an address' % keys)
    max_message_size = section.get('max_message_size', _parse_max_message_size)
    per_peer = _at_least(section, 'max_buffered_bytes_per_peer', max_message_size + FRAME_HEADER_SIZE,
                         'max_message_size + 8')
    return ServerConfig(
        listen=tuple(listen),
        listen_ssl=tuple(listen_ssl),
        listen_syslog=tuple(listen_syslog),
        listen_syslog_tls=tuple(listen_syslog_tls),
        syslog_tls_client_cert_required=section.get('syslog_tls_client_cert', _parse_client_cert),
        pemfile=pemfile,
        cacert=cacert,
        crlfile=section.path('crlfile'),
        max_message_size=max_message_size,
        max_connections=section.get('max_connections', lambda raw: parse_int(raw, 1)),
        udp_receive_buffer=section.get('udp_receive_buffer', _parse_buffer_size),
        max_connections_per_address=section.get('max_connections_per_address', lambda raw: parse_int(raw, 1)),
        tls_reserved_connections=section.get('tls_reserved_connections', lambda raw: parse_int(raw, 0)),
        tls_handshake_timeout=section.get('tls_handshake_timeout', lambda raw: parse_seconds(raw, 0.1, 60.0)),
        idle_timeout=section.get('idle_timeout', lambda raw: parse_seconds(raw, 1.0, MAX_TIMEOUT)),
        frame_timeout=section.get('frame_timeout', lambda raw: parse_seconds(raw, 1.0, MAX_TIMEOUT)),
        max_buffered_bytes=_at_least(section, 'max_buffered_bytes', per_peer, 'max_buffered_bytes_per_peer'),
        max_buffered_bytes_per_peer=per_peer,
        max_inflated_bytes_per_second=section.get('max_inflated_bytes_per_second', parse_size),
        max_ack_clients=section.get('max_ack_clients', lambda raw: parse_int(raw, 1)),
    )


def _at_least(section: _Section, key: str, low: int, low_name: str) -> int:
    """A size that must hold `low` bytes: a default below it grows to it, a value set below it is an error."""
    size = section.get(key, parse_size)
    if size >= low:
        return size
    if section.given(key):
        raise section.ini.error(section.name, key, '%d bytes is less than %s (%d bytes)' % (size, low_name, low))
    return low


def _parse_client_cert(raw: str) -> bool:
    """syslog_tls_client_cert: whether a syslog TLS peer must show a certificate of our CA."""
    if raw.lower() not in ('required', 'optional'):
        raise ValueError('%r is neither required nor optional' % raw)
    return raw.lower() == 'required'


def _listen(section: _Section, key: str, version: int, default_port: int,
            taken: Dict[Tuple[str, int], str]) -> List[ListenAddress]:
    """The addresses of one listen_* key; the same fixed address twice is refused."""
    addresses = section.get(key, lambda raw: parse_addresses(raw, version, default_port))
    for address in addresses:
        where = (str(ipaddress.ip_address(address.host.partition('%')[0])), address.port)
        if address.port and where in taken:
            raise section.ini.error(section.name, key, '%s port %d is already listed in %s'
                                    % (address.host, address.port, taken[where]))
        taken[where] = key
    return addresses


def _parse_max_message_size(raw: str) -> int:
    size = parse_size(raw)
    if not MIN_MAX_MESSAGE_SIZE <= size <= MAX_MAX_MESSAGE_SIZE:
        raise ValueError('%d bytes is out of range: must be from %d (8K) to %d (1G)'
                         % (size, MIN_MAX_MESSAGE_SIZE, MAX_MAX_MESSAGE_SIZE))
    return size


def _parse_buffer_size(raw: str) -> int:
    """0 keeps the kernel's default receive buffer; the kernel takes at most a C int, and doubles it."""
    size = 0 if raw == '0' else parse_size(raw)
    if size > MAX_UDP_RECEIVE_BUFFER:
        raise ValueError('%d bytes is out of range: must be from 0 to %d (1G)' % (size, MAX_UDP_RECEIVE_BUFFER))
    return size
