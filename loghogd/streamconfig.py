"""The [forward] and [consume] sections of loghogd.conf: the optional JetStream link.

A section left out means no link: loghogd then never imports nats-py.
The keys, defaults and help texts are in loghogd/schema.py; the value
parsers and typed objects are here.
"""

import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple


_NAME = re.compile(r'[A-Za-z0-9_-]{1,64}\Z')
_SUBJECT = re.compile(r'[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z')
_FILTER = re.compile(r'([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?\Z|>\Z')
_URL = re.compile(r'((nats|tls)://)?[^\s/,]+(:[0-9]{1,5})?\Z')


@dataclass(frozen=True)
class NatsConnection:
    """Where the NATS servers are and how to prove who we are."""
    servers: Tuple[str, ...]
    stream: str
    credentials: Optional[str]
    tls_ca: Optional[str]
    tls_cert: Optional[str]
    tls_key: Optional[str]


@dataclass(frozen=True)
class ForwardConfig:
    connection: NatsConnection
    subject_prefix: str
    max_queue_bytes: int


@dataclass(frozen=True)
class ConsumeConfig:
    connection: NatsConnection
    durable: str
    subjects: Tuple[str, ...]


def parse_servers(raw: str) -> Tuple[str, ...]:
    """Comma separated NATS URLs (`nats://host:port`, `tls://host:port` or `host:port`)."""
    servers = tuple(item.strip() for item in raw.split(',') if item.strip())
    if not servers:
        raise ValueError('must list at least one NATS server URL')
    for server in servers:
        if not _URL.match(server):
            raise ValueError('%r is not a NATS server URL (nats://host:port)' % server)
    return servers


def parse_name(raw: str) -> str:
    """A stream or consumer name: letters, digits, '_' or '-'."""
    if not _NAME.match(raw):
        raise ValueError('%r must be 1 to 64 letters, digits, "_" or "-"' % raw)
    return raw


def parse_prefix(raw: str) -> str:
    if not _SUBJECT.match(raw):
        raise ValueError('%r is not a subject prefix (dot separated letters, digits, "_" or "-")' % raw)
    return raw


def parse_filters(raw: str) -> Tuple[str, ...]:
    """Comma separated subject filters (`loghog.web.>`); empty means the whole stream."""
    filters = tuple(item.strip() for item in raw.split(',') if item.strip())
    for item in filters:
        if not _FILTER.match(item):
            raise ValueError('%r is not a subject filter (like loghog.app.> or loghog.*.root)' % item)
    return filters


def _connection(values: Any) -> NatsConnection:
    if not values.given('nats_servers'):
        raise values.error('nats_servers', 'required in this section')
    keys = ('nats_servers', 'stream', 'credentials', 'tls_ca', 'tls_cert', 'tls_key')
    connection = NatsConnection(*(values[key] for key in keys))
    if (connection.tls_cert is None) != (connection.tls_key is None):
        key = 'tls_key' if connection.tls_key is None else 'tls_cert'
        raise values.error(key, 'tls_cert and tls_key go together')
    return connection


def forward_config(values: Any) -> ForwardConfig:
    """[forward] from its schema `Values` (loghogd/schema.py has every key, default and help text)."""
    return ForwardConfig(connection=_connection(values), subject_prefix=values['subject_prefix'],
                         max_queue_bytes=values['max_queue_bytes'])


def consume_config(values: Any) -> ConsumeConfig:
    """[consume] from its schema `Values`."""
    return ConsumeConfig(connection=_connection(values), durable=values['durable'], subjects=values['subjects'])
