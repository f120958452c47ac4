"""A Record to the text of one log line: classic, rfc3339 or json (no I/O).

Whatever the format, control characters other than LF and TAB never reach
a file raw (docs/formats.md lists them): a body cannot forge a line with a
CR or act on a terminal running `tail -f`. How LF is written is the
facility's `multiline` choice.
"""

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from loghogd.record import Record

FORMATS = ('classic', 'rfc3339', 'json')
TIMEZONES = ('local', 'utc')
TIMES = ('received', 'sent')
MULTILINES = ('raw', 'indent', 'escape')
OPTIONS = ('format', 'timezone', 'time', 'multiline')
CONTINUATION = '  '
"""What `multiline = indent` puts after every LF: a record start is a digit."""
LAST_TIMESTAMP = 253402300800.0
"""Year 10000: a sent time outside [0, this) is not a time (falls back to received)."""
Render = Callable[[Record], str]
SEVERITY_NAMES = ('EMERG', 'ALERT', 'CRIT', 'ERR', 'WARNING', 'NOTICE', 'INFO', 'DEBUG')

_UNSAFE_CHARS = '\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029'
_UNSAFE = re.compile('[%s]' % _UNSAFE_CHARS)
_UNSAFE_IN_TOKEN = re.compile('[\t\n%s]' % _UNSAFE_CHARS)
_SPACE = re.compile(r'\s')
_C0_CONTROLS = re.compile(r'[\x00-\x1f\x7f]')
_CONTROL_ESCAPE = re.compile(rb'\\[bfru]')
_SAFE_ASCII = bytes(range(0x20, 0x7f)) + b'\t\n'


@dataclass(frozen=True)
class LineFormat:
    """A facility's line format options; the defaults are the original line."""

    format: str = 'classic'
    timezone: str = 'local'
    time: str = 'received'
    multiline: str = 'raw'

    def __post_init__(self) -> None:
        for name, allowed in zip(OPTIONS, (FORMATS, TIMEZONES, TIMES, MULTILINES)):
            if getattr(self, name) not in allowed:
                raise ValueError('%s %r is not one of %s' % (name, getattr(self, name), ', '.join(allowed)))

    @property
    def is_classic(self) -> bool:
        """The original line, which the server builds from its cached receive-time prefix."""
        return self == CLASSIC

    def describe(self) -> str:
        return ', '.join('%s = %s' % (name, getattr(self, name)) for name in OPTIONS)


CLASSIC = LineFormat()


def parse_option(name: str, raw: str) -> str:
    """One option's value, checked: ValueError names what is allowed."""
    value = raw.strip().lower()
    LineFormat(**{name: value})
    return value


def _escape_char(match: 're.Match[str]') -> str:
    code = ord(match.group())
    return '\\x%02x' % code if code < 0x100 else '\\u%04x' % code


def json_may_hold_controls(data: bytes) -> bool:
    """Whether strings decoded from this strict UTF-8 JSON may hold a character escape_controls changes.

    Strict JSON has no raw control character, so one can only come from DEL
    (127), a non-ASCII byte or a \\b \\f \\r \\u escape; an escaped quote,
    backslash or slash, common in log lines, cannot make one, nor LF or TAB,
    which escape_controls keeps.
    """
    return 127 in data or not data.isascii() or (92 in data and _CONTROL_ESCAPE.search(data) is not None)


def may_hold_controls(text: str) -> bool:
    """Whether escape_controls may change `text`: exact for ASCII, where it is six times quicker than
    isprintable (a line of text is mostly ASCII), and isprintable's answer for the rest."""
    if text.isascii():
        return bool(text.encode('ascii').translate(None, _SAFE_ASCII))
    return not text.isprintable()


def escape_controls(text: str) -> str:
    """`text` with every control character but LF and TAB written as \\xHH or \\uHHHH."""
    return _UNSAFE.sub(_escape_char, text) if may_hold_controls(text) else text


def classic_host(host: str) -> str:
    """The host as the classic line writes it: C0 controls as '?' (as ever), at most 255 characters."""
    return escape_controls(_C0_CONTROLS.sub('?', host[:255]))


def text_body(body: str, multiline: str) -> str:
    """A body for the classic and rfc3339 lines: controls escaped, LF as `multiline` says."""
    if body.isprintable():
        return body
    body = _UNSAFE.sub(_escape_char, body)
    if multiline == 'indent':
        return body.replace('\n', '\n' + CONTINUATION)
    if multiline == 'escape':
        return body.replace('\n', '\\n')
    return body


def _token(text: Optional[str]) -> str:
    """One space-free rfc3339 field; '-' (RFC 5424's NILVALUE) when empty or unknown."""
    if not text:
        return '-'
    if text.isprintable() and ' ' not in text and len(text) <= 255:
        return text
    return _SPACE.sub('_', _UNSAFE_IN_TOKEN.sub(_escape_char, text[:255]))


class Clock:
    """Seconds since the epoch as text to the nearest microsecond, the date and time of day
    formatted once per second. The defaults give the classic line's time."""

    def __init__(self, utc: bool = False, separator: str = ' ', with_offset: bool = False) -> None:
        self._convert = time.gmtime if utc else time.localtime
        self._pattern = '%Y-%m-%d' + separator + '%H:%M:%S'
        self._with_offset = with_offset
        self._utc = utc
        self._second: Optional[int] = None
        self._head = ''
        self._offset = ''

    def text(self, when: float) -> str:
        second, micro = divmod(round(when * 1e6), 1000000)
        if second != self._second:
            moment = self._convert(second)
            self._head = time.strftime(self._pattern, moment)
            self._offset = _offset_text(moment.tm_gmtoff, self._utc) if self._with_offset else ''
            self._second = second
        return '%s.%06d%s' % (self._head, micro, self._offset)


def _offset_text(gmtoff: int, utc: bool) -> str:
    if utc:
        return 'Z'
    sign = '-' if gmtoff < 0 else '+'
    minutes = abs(gmtoff) // 60
    return '%s%02d:%02d' % (sign, minutes // 60, minutes % 60)


def sent_time(record: Record) -> Optional[float]:
    """The sender's event time, or None when it gave none or one no calendar holds."""
    sent = record.sent
    if sent is None or not 0.0 <= sent < LAST_TIMESTAMP:
        return None
    return sent


def level_name(record: Record) -> Optional[str]:
    """The record's level, or its syslog severity's name."""
    if record.level is not None:
        return record.level
    if record.syslog is not None and 0 <= record.syslog.severity < len(SEVERITY_NAMES):
        return SEVERITY_NAMES[record.syslog.severity]
    return None


def _full_body(record: Record) -> str:
    """The body with the exception (traceback) and stack after it, as logging writes them."""
    parts = [record.body] + [part for part in (record.exception, record.stack) if part]
    return '\n'.join(parts)


class Formatter:
    """Renders Records as lines of one LineFormat (a per-second cache inside, no I/O)."""

    def __init__(self, line_format: LineFormat) -> None:
        self.line_format = line_format
        utc = line_format.timezone == 'utc'
        style = line_format.format
        self._lead = Clock(utc, ' ' if style == 'classic' else 'T', style != 'classic')
        self._received = Clock(utc, 'T', True)
        self._sent = Clock(utc, 'T', True)
        self._by_sent = line_format.time == 'sent'
        self.render: Render = getattr(self, '_' + style)

    def _lead_time(self, record: Record) -> str:
        sent = sent_time(record) if self._by_sent else None
        return self._lead.text(record.received if sent is None else sent)

    def _classic(self, record: Record) -> str:
        return '%s - %s - %s\n' % (self._lead_time(record), classic_host(record.host),
                                   text_body(_full_body(record), self.line_format.multiline))

    def _rfc3339(self, record: Record) -> str:
        return '%s %s %s %s %s %s\n' % (
            self._lead_time(record), _token(record.host), _token(record.app_id), _token(record.module),
            _token(level_name(record)), text_body(_full_body(record), self.line_format.multiline))

    def _json(self, record: Record) -> str:
        text = json.dumps(self.json_object(record), ensure_ascii=False, separators=(',', ':'),
                          default=repr)
        return (text if text.isprintable() else _UNSAFE.sub(_json_escape, text)) + '\n'

    def json_object(self, record: Record) -> Dict[str, Any]:
        """The keys of a json line, in their documented order; None fields left out."""
        sent = sent_time(record)
        received = self._received.text(record.received)
        sent_text = None if sent is None else self._sent.text(sent)
        fields: Dict[str, Any] = {'time': sent_text if self._by_sent and sent_text else received,
                                  'received': received, 'sent': sent_text, 'host': record.host,
                                  'app': record.app_id, 'module': record.module, 'level': record.level,
                                  'message': record.body, 'exception': record.exception, 'stack': record.stack,
                                  'extra': record.extra, 'pid': record.pid, 'thread': record.thread}
        if record.syslog is not None:
            syslog = record.syslog
            fields['syslog'] = {name: value for name, value in (
                ('severity', syslog.severity), ('facility', syslog.facility), ('msgid', syslog.msgid),
                ('procid', syslog.procid), ('structured_data', syslog.structured_data)) if value is not None}
        fields.update(peer=record.peer, client_id=record.client_id, seq=record.seq)
        return {name: value for name, value in fields.items() if value is not None}


def _json_escape(match: 're.Match[str]') -> str:
    return '\\u%04x' % ord(match.group())


def format_changes(old: Dict[str, LineFormat], new: Dict[str, LineFormat]) -> Tuple[str, ...]:
    """Operator-facing notes for facilities whose line format a reload changes."""
    return tuple('%s: line format %s (was %s); new lines only' % (name, new[name].describe(), old[name].describe())
                 for name in sorted(new) if name in old and old[name] != new[name])
