"""A Record on a JetStream stream: its JSON, its subject and its message id.

The payload is a JSON object of the Record fields (docs/scaling.md lists
them), fields that are None left out, `syslog` as an object of its own.
The message id makes JetStream drop a record published twice (a client's
resend through another edge, an edge replaying its queue after a crash):
`<client_id>-<seq>` for acknowledged records, otherwise a unique id made
when the record enters the edge's queue.

A writer trusts nothing on the stream: `decode_record` checks every field's
type and size before a Record is made.
"""

import itertools
import json
import os
from dataclasses import fields
from typing import Any, Dict

from loghogd.facilities import Facility
from loghogd.record import Record, SyslogFields

MAX_TEXT = 64 * 1024 * 1024
MAX_TIME = 1e11
"""Seconds since the epoch a time field may hold (year 5138): the line prefix formats it."""
_TEXT = (str,)
_NUMBER = (int, float)
_FIELD_KINDS: Dict[str, tuple] = {
    'app_id': _TEXT, 'module': _TEXT, 'host': _TEXT, 'body': _TEXT, 'received': _NUMBER, 'sent': _NUMBER,
    'level': _TEXT, 'levelno': (int,), 'exception': _TEXT, 'stack': _TEXT, 'pid': (int,), 'thread': _TEXT,
    'extra': (dict,), 'syslog': (dict,), 'peer': _TEXT, 'client_id': _TEXT, 'seq': (int,),
}
_NAMES = tuple(field.name for field in fields(Record))
_decode = json.JSONDecoder().decode
_encode = json.JSONEncoder(separators=(',', ':'), ensure_ascii=False).encode
_UNIQUE_PREFIX = 'u:%s.' % os.urandom(12).hex()
"""New at each start: ids made by this process cannot meet those of an earlier one."""
_serials = itertools.count(1)
_REQUIRED = ('app_id', 'module', 'host', 'body', 'received')
_SYSLOG_KINDS = {'severity': (int,), 'facility': (int,), 'msgid': _TEXT, 'procid': _TEXT, 'structured_data': _TEXT}


class BadStreamRecord(ValueError):
    """A stream message that is not a Record this daemon would have published."""


def record_fields(record: Record) -> Dict[str, Any]:
    """The record's fields that are not None, `syslog` as a dict of its own."""
    values = {}
    for name in _NAMES:
        value = getattr(record, name)
        if value is not None:
            values[name] = value
    syslog = values.get('syslog')
    if syslog is not None:
        values['syslog'] = {name: value for name in _SYSLOG_KINDS
                            if (value := getattr(syslog, name)) is not None}
    return values


def encode_record(record: Record) -> bytes:
    """The record's JSON, compact, without the fields that are None."""
    return _encode(record_fields(record)).encode('utf-8')


def decode_record(payload: bytes) -> Record:
    """A Record from a stream message; BadStreamRecord says what is wrong."""
    try:
        values = _decode(payload.decode('utf-8'))
    except (ValueError, RecursionError) as error:
        raise BadStreamRecord('not JSON: %s' % error) from None
    if type(values) is not dict:
        raise BadStreamRecord('not a JSON object')
    for name in _REQUIRED:
        if name not in values:
            raise BadStreamRecord('field %r is missing' % name)
    for name, value in values.items():
        kinds = _FIELD_KINDS.get(name)
        if kinds is None:
            raise BadStreamRecord('unknown field %r' % name)
        _check(name, value, kinds)
    for name in ('received', 'sent'):
        if name in values and not 0 <= values[name] < MAX_TIME:
            raise BadStreamRecord('field %r is no time: %r' % (name, values[name]))
    syslog = values.get('syslog')
    if syslog is not None:
        for name, value in syslog.items():
            if name not in _SYSLOG_KINDS:
                raise BadStreamRecord('unknown syslog field %r' % name)
            _check('syslog.' + name, value, _SYSLOG_KINDS[name])
        if 'severity' not in syslog or 'facility' not in syslog:
            raise BadStreamRecord('syslog needs severity and facility')
        values['syslog'] = SyslogFields(**syslog)
    return Record(**values)


def _check(name: str, value: Any, kinds: tuple) -> None:
    if type(value) not in kinds:
        raise BadStreamRecord('field %r has the wrong type %s' % (name, type(value).__name__))
    if type(value) is str and len(value) > MAX_TEXT:
        raise BadStreamRecord('field %r is longer than %d characters' % (name, MAX_TEXT))
    if type(value) is float and value != value:
        raise BadStreamRecord('field %r is not a number' % name)


def message_id(record: Record) -> str:
    """What JetStream de-duplicates on: the client's identity, else a unique id.

    A record without acknowledgements is never resent by its client; its
    only copies are the edge's replays of its queue, which carry the id
    stored with it. A content hash would merge two identical lines logged
    in the same millisecond (a version 1 time stamp's resolution).
    """
    if record.client_id is not None and record.seq is not None:
        return '%s-%d' % (record.client_id, record.seq)
    return _UNIQUE_PREFIX + str(next(_serials))


def subject(prefix: str, facility: Facility) -> str:
    """`<prefix>.<app>.<module>` from the facility's configured names, never from the peer's."""
    return '%s.%s.%s' % (prefix, facility.app_id, facility.module)
