"""Every option of loghogd.conf and facilities.conf, once: name, parser, default, help.

The loaders take defaults and validation from these records and build
their typed frozen objects from the values; docs/configuration.md and
man/loghogd.8 list the options as `python -m loghogd.schema --write-docs`
renders them, and tests/test_schema.py fails when they differ. To add an
option: add its Option below, read it in config.py or facilities.py, run
the command.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from loghog.protocol import DEFAULT_MAX_MESSAGE_SIZE
from loghogd.formats import CLASSIC, FORMATS, MULTILINES, TIMES, TIMEZONES, parse_option
from loghogd.hooks import parse_command
from loghogd.ini import ConfigError, IniFile, parse_bool, parse_int, parse_port, parse_seconds, resolve_path
from loghogd.permissions import DIR_MODE_NEEDED, FILE_MODE_NEEDED, parse_group, parse_mode
from loghogd.ratelimit import parse_rate
from loghogd.schedule import parse_age, parse_rotate, parse_size
from loghogd.streamconfig import parse_filters, parse_name, parse_prefix, parse_servers
from loghogd.values import (parse_addresses, parse_buffer_size, parse_client_cert, parse_compressor_format,
                            parse_log_level, parse_log_when, parse_max_message_size, parse_path,
                            parse_required_path, parse_user, size_text)

LOGHOGD_CONF = 'loghogd.conf'
FACILITIES_CONF = 'facilities.conf'
FACILITY = ''
"""The section of a facilities.conf option: every facility's section takes the same keys."""
MAX_TIMEOUT = 86400.0


@dataclass(frozen=True)
class Option:
    """One key of one section. `default` is text as written in the file, None if there is none
    (`required`, or worked out by the loader: then `shown` says what it is)."""
    file: str
    section: str
    name: str
    default: Optional[str]
    parse: Callable[[str], Any]
    help: str
    inherited: bool = False
    """facilities.conf: a submodule that leaves the key out takes its app's root section's value."""
    required: bool = False
    is_path: bool = False
    """Relative to the directory of the file it is written in; '' is None."""
    shown: str = ''
    """How the docs show a default the loader works out, e.g. `<rundir>/loghogd.pid`."""


def _conf(section: str, name: str, default: str, parse: Callable[[str], Any], help: str, **more: Any) -> Option:
    return Option(LOGHOGD_CONF, section, name, default, parse, help, **more)


def _path(section: str, name: str, default: str, help: str, **more: Any) -> Option:
    parse = parse_required_path if default else parse_path
    return Option(LOGHOGD_CONF, section, name, default, parse, help, is_path=True, **more)


def _facility(name: str, default: Optional[str], parse: Callable[[str], Any], help: str, **more: Any) -> Option:
    return Option(FACILITIES_CONF, FACILITY, name, default, parse, help, **more)


def _at_least(low: int) -> Callable[[str], int]:
    return lambda raw: parse_int(raw, low)


def _seconds(low: float, high: float) -> Callable[[str], float]:
    return lambda raw: parse_seconds(raw, low, high)


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An empty value switches the setting off (None)."""
    return lambda raw: parse(raw) if raw else None


def _listen(section: str, name: str, version: int, default: str, help: str) -> Option:
    return _conf(section, name, default, lambda raw: parse_addresses(raw, version), help)


def _choices(values: Tuple[str, ...]) -> str:
    return ', '.join('`%s`' % value for value in values[:-1]) + ' or `%s`' % values[-1]


def _nats_connection(section: str) -> Tuple[Option, ...]:
    """The keys [forward] and [consume] share: where NATS is and how to prove who we are."""
    return (
        _conf(section, 'nats_servers', None, parse_servers,
              'NATS server URLs, comma separated: `nats://10.0.0.1:4222, nats://10.0.0.2:4222` (`tls://` for '
              'TLS, or plain `host:port`)', required=True),
        _conf(section, 'stream', 'LOGHOG', parse_name,
              'the JetStream stream (letters, digits, `_`, `-`); it must exist, see '
              '[scaling.md](scaling.md#the-stream)'),
        _path(section, 'credentials', '', 'a NATS credentials file (`.creds`: user JWT and NKey seed); empty: none'),
        _path(section, 'tls_ca', '', "CA bundle that signs the NATS servers' certificates; empty: the system's"),
        _path(section, 'tls_cert', '', 'client certificate for NATS servers that require one (with `tls_key`)'),
        _path(section, 'tls_key', '', 'the key of `tls_cert`'),
    )


SECTIONS: Dict[Tuple[str, str], str] = {
    (LOGHOGD_CONF, 'main'): '',
    (LOGHOGD_CONF, 'log'): "loghogd's own messages (they also go to stderr in the foreground)",
    (LOGHOGD_CONF, 'compressor'): 'how rotated files are compressed',
    (LOGHOGD_CONF, 'server'): 'where loghogd listens',
    (LOGHOGD_CONF, 'hooks'): 'the `post_rotate` commands of facilities.conf',
    (LOGHOGD_CONF, 'stats'): '',
    (LOGHOGD_CONF, 'format'): 'the line format of every facility that does not set its own (a facility\'s keys '
                              'of the same names override these; see [formats.md](formats.md) for each format\'s '
                              'grammar and an example line)',
    (LOGHOGD_CONF, 'forward'): 'the optional JetStream link, edge side: off unless the section is present; '
                               'needs the Python package `nats-py` (see [scaling.md](scaling.md))',
    (LOGHOGD_CONF, 'consume'): 'the optional JetStream link, writer side: off unless the section is present; '
                               'needs the Python package `nats-py` (see [scaling.md](scaling.md))',
    (FACILITIES_CONF, FACILITY): '',
}
"""Each section's one-line description, in the order the docs list them."""

OPTIONS: Tuple[Option, ...] = (
    _conf('main', 'daemon', 'no', parse_bool, '`yes`: detach from the terminal and run in the background'),
    _path('main', 'workdir', '/var/lib/loghogd',
          'state that must survive restarts (`rotation-state.json`: when each file last rotated)'),
    _path('main', 'logdir', '/var/log/loghogd', 'log files go to `<logdir>/<app id>/<module>.log`'),
    _path('main', 'rundir', '/run/loghogd',
          "runtime files (e.g. the bound ports in `listening.json`); with `user` set it stays root's, `1770` "
          "with the user's group (docs/operations.md)"),
    _path('main', 'facilities_config', 'facilities.conf',
          "the facilities file; relative to loghogd.conf's directory"),
    _path('main', 'pidfile', '', 'PID file, locked while loghogd runs', shown='`<rundir>/loghogd.pid`'),
    _conf('main', 'user', '', parse_user,
          'if set, loghogd binds its sockets and then runs as this user; empty keeps the starting user'),

    _path('log', 'filename', '',
          "the daemon's log file; set but empty (`filename =`): stderr only. No application id may end in "
          '`.log`, so this file never meets an application\'s directory', shown='`<logdir>/loghogd.log`'),
    _conf('log', 'backup_count', '14', _at_least(0), 'rotated daemon logs to keep (0 or more)'),
    _conf('log', 'when', 'daily', parse_log_when,
          'when the daemon log rotates: any `rotate` schedule except `size`'),
    _conf('log', 'level', 'INFO', parse_log_level,
          '`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL` (any case)'),

    _conf('compressor', 'format', 'xz', parse_compressor_format,
          '`xz`, `zstd`, `gzip` or `bzip2`; loghogd falls back to gzip when `xz` or `zstd` is not installed '
          '(Debian packages `xz-utils`, `zstd`), and says so once at start-up'),
    _conf('compressor', 'level', '6', _at_least(0),
          "xz 0-9, zstd 1-19, gzip and bzip2 1-9; 6 is each tool's usual default (xz `-9` needs ~670 MiB of "
          "memory per compression; zstd's own default is 3)"),

    _listen('server', 'listen_ipv4', 4, '127.0.0.1',
            'IPv4 addresses for plain TCP and UDP, comma separated; empty: none'),
    _listen('server', 'listen_ipv6', 6, '',
            'IPv6 addresses for plain TCP and UDP, e.g. `::1, [2001:db8::1]:6000`'),
    _conf('server', 'default_port', '5566', parse_port, 'port of every plain address that names none'),
    _listen('server', 'listen_ipv4_ssl', 4, '', 'IPv4 addresses for mutual TLS (TCP only)'),
    _listen('server', 'listen_ipv6_ssl', 6, '', 'IPv6 addresses for mutual TLS'),
    _conf('server', 'default_port_ssl', '5577', parse_port, 'port of every TLS address that names none'),
    _path('server', 'pemfile', '',
          "the server's certificate and private key (PEM); required when a TLS address is listed"),
    _path('server', 'cacert', '',
          'the CA that client certificates must be signed by; required when a TLS address is listed'),
    _path('server', 'crlfile', '', 'a certificate revocation list of that CA; empty: none'),
    _listen('server', 'listen_ipv4_syslog', 4, '',
            'IPv4 addresses for syslog over UDP and TCP (RFC 3164 and 5424; TCP LF-terminated or '
            'octet-counted); empty: off. See [syslog.md](syslog.md)'),
    _listen('server', 'listen_ipv6_syslog', 6, '', 'IPv6 addresses for syslog over UDP and TCP'),
    _conf('server', 'default_port_syslog', '514', parse_port, 'port of every syslog address that names none'),
    _listen('server', 'listen_ipv4_syslog_tls', 4, '',
            'IPv4 addresses for syslog over TLS (RFC 5425) with `pemfile`, `cacert` and `crlfile`; empty: off'),
    _listen('server', 'listen_ipv6_syslog_tls', 6, '', 'IPv6 addresses for syslog over TLS'),
    _conf('server', 'default_port_syslog_tls', '6514', parse_port,
          'port of every syslog TLS address that names none'),
    _conf('server', 'syslog_tls_client_cert', 'required', parse_client_cert,
          '`required`: a syslog TLS sender must show a certificate signed by `cacert`; `optional`: it may show '
          'none (one it shows is still checked)'),
    _conf('server', 'max_message_size', size_text(DEFAULT_MAX_MESSAGE_SIZE), parse_max_message_size,
          'the largest frame accepted, from `8K` to `1G`; a larger one costs the sender its connection (a longer '
          'syslog message is cut to this size and written, and the sender stays connected)'),
    _conf('server', 'max_connections', '4096', _at_least(1),
          'open client connections at most (1 or more), TCP and TLS together'),
    _conf('server', 'max_ack_clients', '100000', _at_least(1),
          'acknowledged-delivery client ids remembered at most (1 or more); a new one beyond it evicts the least '
          "recently seen tenth of the busiest application's ids (counted in `ack_clients_evicted`, logged with "
          'the peer)'),
    _conf('server', 'udp_receive_buffer', '8M', parse_buffer_size,
          "receive buffer of each UDP socket, up to `1G` (the kernel takes no more); `0` keeps the kernel's "
          'default'),
    _conf('server', 'max_connections_per_address', '256', _at_least(1),
          'open connections from one client IP address at most; more are closed at once'),
    _conf('server', 'tls_reserved_connections', '1024', _at_least(0),
          'slots of `max_connections` that only TLS clients may take, so that plain TCP cannot fill them (at '
          'most half of `max_connections`; none without a TLS address)'),
    _conf('server', 'tls_handshake_timeout', '5', _seconds(0.1, 60.0),
          'seconds (`0.1` to `60`) a TLS client has to finish its handshake after the connection is accepted'),
    _conf('server', 'idle_timeout', '60', _seconds(1.0, MAX_TIMEOUT),
          'seconds (at least `1`) a connection may stay open without sending its first complete frame; a client '
          'that has sent one is never closed for idling'),
    _conf('server', 'frame_timeout', '60', _seconds(1.0, MAX_TIMEOUT),
          'seconds (at least `1`) a client has to finish a frame it has started to send'),
    _conf('server', 'max_buffered_bytes', '64M', parse_size,
          'bytes held for unfinished frames, all clients together; reaching it closes the connections whose '
          'frames were started longest ago. At least `max_buffered_bytes_per_peer`'),
    _conf('server', 'max_buffered_bytes_per_peer', '8M', parse_size,
          'bytes held for unfinished frames of the connections from one IP address; the connection that goes '
          'past it is closed. At least `max_message_size` + 8 (the default grows to that)'),
    _conf('server', 'max_inflated_bytes_per_second', '8M', parse_size,
          'bytes one IP address may inflate from compressed frames per second (with a burst of one second\'s '
          "worth; a frame that fails to inflate, a zip bomb say, counts as `max_message_size`); over it, that "
          "client's TCP or TLS connections are read more slowly and its compressed UDP "
          'datagrams are dropped and counted (`inflate_rate`)'),
    _conf('server', 'peer_rate_limit', '', _optional(parse_rate),
          'records one IP address may send per second, across all applications, as `N/s` (burst: one second\'s '
          'worth); over it records are not written: see [rate limits](operations.md#rate-limits). Empty: no limit'),

    _conf('hooks', 'max_running', '4', lambda raw: parse_int(raw, 1, 256),
          'hooks that run at once at most (1-256); more wait in order, at most 10000'),

    _path('stats', 'prometheus_textfile', '',
          "write counters to this file in Prometheus' text format (for node_exporter's textfile collector); "
          'empty: off'),

    _conf('format', 'format', CLASSIC.format, lambda raw: parse_option('format', raw),
          '%s: `classic` is the original line' % _choices(FORMATS)),
    _conf('format', 'timezone', CLASSIC.timezone, lambda raw: parse_option('timezone', raw),
          "%s: the zone of the line's timestamps" % _choices(TIMEZONES)),
    _conf('format', 'time', CLASSIC.time, lambda raw: parse_option('time', raw),
          '%s: which time leads the line' % _choices(TIMES)),
    _conf('format', 'multiline', CLASSIC.multiline, lambda raw: parse_option('multiline', raw),
          '%s: how a line feed in a body is written (`classic`, `rfc3339`)' % _choices(MULTILINES)),

    *(option for section in ('forward', 'consume') for option in _nats_connection(section)),
    _conf('forward', 'subject_prefix', 'loghog', parse_prefix,
          'records go to subject `<prefix>.<app>.<module>`, from the facility\'s configured names'),
    _conf('forward', 'max_queue_bytes', '1G', parse_size,
          'bytes of records that may wait in `<workdir>/forward-queue` for JetStream; past it, records are '
          'rejected (`forward_queue_full`)'),
    _conf('consume', 'durable', 'loghogd', parse_name, 'the name of the durable consumer (one per writer group)'),
    _conf('consume', 'subjects', '', parse_filters,
          'subject filters, comma separated (`loghog.web.>, loghog.shop.>`); empty: the whole stream. With '
          'several, one consumer `<durable>-1`, `<durable>-2`, ... per filter'),

    _facility('rotate', None, parse_rotate,
              'when the file rotates: a named schedule such as `daily`, five cron fields, or `size` (see '
              '[Rotation schedules](#rotation-schedules-rotate-log-when))', required=True),
    _facility('backup_count', None, _at_least(0), 'rotated files to keep; older ones are deleted', required=True),
    _facility('max_size', '', _optional(parse_size),
              'also rotate before the file would grow past this size; required with `rotate = size`',
              inherited=True),
    _facility('max_age', '', _optional(parse_age), 'also delete backups older than this age', inherited=True),
    _facility('flush_every', '1', _at_least(1),
              'hold at most this many records in memory before writing them; 1 writes each record before the '
              'next read', inherited=True),
    _facility('file_per_host', 'no', parse_bool,
              '`yes`: one file per sending host, `<hostname>@<module>.log`', inherited=True),
    _facility('max_hosts', '10000', _at_least(1),
              'with `file_per_host`, at most this many host files per facility; a record from a further host is '
              "refused (counted as `too_many_hosts`, reported with the peer's address)", inherited=True),
    _facility('secret', '', lambda raw: raw or None,
              'records must be signed (HMAC-MD5) with this shared secret; leading and trailing spaces are not '
              'part of it', inherited=True),
    _facility('sync', 'no', parse_bool, '`yes`: fsync the file after each write', inherited=True),
    _facility('write', 'yes', parse_bool,
              '`no`: write no file for this facility (an edge that only forwards); needs `forward = yes`',
              inherited=True),
    _facility('forward', 'no', parse_bool,
              '`yes`: publish every accepted record to JetStream (needs a `[forward]` section); an acknowledged '
              'record is acknowledged to its client only once JetStream has it', inherited=True),
    _facility('file_mode', '', _optional(lambda raw: parse_mode(raw, FILE_MODE_NEEDED)),
              'octal mode of the log file and its backups (empty: `0640`); must hold `0600` (loghogd writes it). '
              "Applied with fchmod, so loghogd's umask does not narrow it", inherited=True),
    _facility('dir_mode', '', _optional(lambda raw: parse_mode(raw, DIR_MODE_NEEDED)),
              "octal mode of the application's directory `<logdir>/<app>` (empty: `0750`); must hold `0700`; only "
              "in the app's root section (one directory for all its facilities)", inherited=True),
    _facility('file_group', '', parse_group,
              "group (name or number; it must exist) of the log files, backups and the application's directory "
              "(empty: the daemon's); the daemon's user must be a member of it (Debian: `adduser loghog "
              'shop-devs`)', inherited=True),
    _facility('post_rotate', '', parse_command,
              "a command run on each finished (compressed) backup, with the backup's path as its last argument: "
              'see [post-rotate hooks](operations.md#post-rotate-hooks). Split into words like a shell line; no '
              'shell runs it', inherited=True),
    _facility('post_rotate_timeout', '300', _seconds(1.0, MAX_TIMEOUT),
              'seconds (1-86400) a `post_rotate` command may run; then it and what it started are killed',
              inherited=True),
    _facility('rate_limit', '', _optional(parse_rate),
              'records per second this facility writes, as `N/s` (per sending host with `file_per_host`); burst: '
              'one second\'s worth. See [rate limits](operations.md#rate-limits)', inherited=True),
    _facility('max_total_size', '', _optional(parse_size),
              'the live file and its backups together at most this size (per host with `file_per_host`); the '
              'oldest backups are deleted first. With `backup_count` and `max_age`, the strictest wins',
              inherited=True),
    *(_facility(key, None, lambda raw, key=key: parse_option(key, raw),
                'as `%s` of `[format]`, for this facility; a change on reload applies to new lines and is logged'
                % key, inherited=True, shown='`[format]` of loghogd.conf')
      for key in ('format', 'timezone', 'time', 'multiline')),
)

_BY_KEY: Dict[Tuple[str, str, str], Option] = {(option.file, option.section, option.name): option
                                                for option in OPTIONS}


def option(file: str, section: str, name: str) -> Option:
    return _BY_KEY[file, section, name]


def sections(file: str) -> List[str]:
    """The sections of `file` in the order the docs list them."""
    return [section for (in_file, section) in SECTIONS if in_file == file]


def keys_of(file: str, section: str) -> List[str]:
    """The keys `section` of `file` may hold, in the docs' order."""
    return [option.name for option in OPTIONS if (option.file, option.section) == (file, section)]


def default(file: str, section: str, name: str) -> Any:
    """The typed default of an option, for the frozen objects' field defaults."""
    chosen = option(file, section, name)
    assert chosen.default is not None, '%s [%s] %s has no default' % (file, section, name)
    return chosen.parse(chosen.default)


class Values:
    """One section's typed values: what the file says, else (for an inherited facilities.conf key)
    the app's root facility's value, else the default. Wrong values are located ConfigErrors."""

    def __init__(self, ini: IniFile, file: str, section: str, name: str = '', root: Optional[object] = None) -> None:
        self.ini = ini
        self.file = file
        self.section = section
        self.name = name or section
        self.root = root
        self._given = ini.parser[self.name] if ini.parser.has_section(self.name) else {}

    def given(self, key: str) -> bool:
        """Whether the file sets `key` (possibly to an empty value)."""
        return key in self._given

    def __getitem__(self, key: str) -> Any:
        chosen = option(self.file, self.section, key)
        if self.given(key):
            try:
                return self.ini.convert(self.name, key, self._given[key].strip(), lambda raw: self._parse(chosen, raw))
            except ConfigError as error:
                if chosen.default is None:
                    raise
                self.ini.errors.append(error)  # the default stands in while loading finds the other mistakes
        if chosen.inherited and self.root is not None:
            return getattr(self.root, key)
        assert chosen.default is not None, '%s [%s] %s has no default' % (self.file, self.section, key)
        return self._parse(chosen, chosen.default)

    def _parse(self, chosen: Option, raw: str) -> Any:
        value = chosen.parse(raw)
        return resolve_path(self.ini.directory, value) if chosen.is_path else value

    def error(self, key: str, message: str) -> Exception:
        return self.ini.error(self.name, key, message)


if __name__ == '__main__':
    from loghogd.schemadocs import main
    raise SystemExit(main())
