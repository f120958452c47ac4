"""Parsers for the values of particular loghogd.conf options.

Each takes the text written in the file and returns the typed value or
raises ValueError with a message for the operator; the schema names which
option uses which.
"""

import ipaddress
import logging
import re
from typing import Optional, Tuple

from loghogd.ini import parse_port, resolve_path
from loghogd.schedule import parse_rotate, parse_size

MIN_MAX_MESSAGE_SIZE = 8192
MAX_MAX_MESSAGE_SIZE = 1024 ** 3
MAX_UDP_RECEIVE_BUFFER = 1024 ** 3
COMPRESSOR_LEVELS = {'xz': range(0, 10), 'zstd': range(1, 20), 'gzip': range(1, 10), 'bzip2': range(1, 10)}
LOG_LEVELS = {name: getattr(logging, name) for name in ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')}
HostPort = Tuple[str, Optional[int]]
"""A listen address as written: the port is None where the section's default port applies."""


def size_text(size: int) -> str:
    """`size` bytes as a size is written in a file: '1M' for 1048576."""
    for suffix, unit in (('G', 1024 ** 3), ('M', 1024 ** 2), ('K', 1024)):
        if size and size % unit == 0:
            return '%d%s' % (size // unit, suffix)
    return str(size)


def parse_path(raw: str) -> str:
    """A path as written (resolved against the file's directory when loaded); '' for none."""
    resolve_path('', raw)
    return raw


def parse_required_path(raw: str) -> str:
    if not raw:
        raise ValueError('must not be empty')
    return parse_path(raw)


def parse_user(raw: str) -> Optional[str]:
    """A user name or number to run as; None keeps the starting user."""
    if any(char.isspace() or char in ':/' for char in raw):
        raise ValueError('%r is not a user name' % raw)
    return raw or None


def parse_log_when(raw: str) -> str:
    schedule = parse_rotate(raw)
    if schedule.size_only:
        raise ValueError("'size' needs a max_size, which the internal log has not; use a schedule")
    return schedule.spec


def parse_log_level(raw: str) -> int:
    try:
        return LOG_LEVELS[raw.upper()]
    except KeyError:
        raise ValueError('%r is not a level (%s)' % (raw, ', '.join(LOG_LEVELS))) from None


def parse_compressor_format(raw: str) -> str:
    if raw.lower() not in COMPRESSOR_LEVELS:
        raise ValueError('%r is not a compressor (%s)' % (raw, ', '.join(COMPRESSOR_LEVELS)))
    return raw.lower()


def parse_client_cert(raw: str) -> bool:
    """syslog_tls_client_cert: whether a syslog TLS peer must show a certificate of our CA."""
    if raw.lower() not in ('required', 'optional'):
        raise ValueError('%r is neither required nor optional' % raw)
    return raw.lower() == 'required'


def parse_max_message_size(raw: str) -> int:
    size = parse_size(raw)
    if not MIN_MAX_MESSAGE_SIZE <= size <= MAX_MAX_MESSAGE_SIZE:
        raise ValueError('%d bytes is out of range: must be from %d (8K) to %d (1G)'
                         % (size, MIN_MAX_MESSAGE_SIZE, MAX_MAX_MESSAGE_SIZE))
    return size


def parse_buffer_size(raw: str) -> int:
    """0 keeps the kernel's default receive buffer; the kernel takes at most a C int, and doubles it."""
    size = 0 if raw == '0' else parse_size(raw)
    if size > MAX_UDP_RECEIVE_BUFFER:
        raise ValueError('%d bytes is out of range: must be from 0 to %d (1G)' % (size, MAX_UDP_RECEIVE_BUFFER))
    return size


def parse_addresses(raw: str, version: int) -> Tuple[HostPort, ...]:
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
        addresses.append((host, None if port_text is None else parse_port(port_text)))
    return tuple(addresses)


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
