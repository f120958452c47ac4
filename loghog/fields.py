"""What emit() keeps of a LogRecord: its protocol 1.2 record array, ready to send.

The array is built in the application's thread, so it holds only values
that cannot change afterwards (str, int, float, bool, None, and copies of
JSON containers), and it is cheap: a plain record costs a few attribute
reads. Because it already is what a batch carries (a tuple, trailing nulls
left out), the sender thread puts a run of them into a batch as they are;
a version 1 frame takes its fields from it (`version1`), with the
nanoseconds that a batch's microseconds cannot hold kept beside it.

`body` is the formatted record without the exception and stack texts that
a standard Formatter appends to it: those travel as their own fields, and
`full_body` puts them back (a version 1 frame, the server's classic line).
A formatter that puts them elsewhere keeps them in the body, and the
fields are left empty, so the text a line shows never changes.

`extra` is every attribute of the record that a standard LogRecord does not
have (what `logger.info(..., extra={...})` adds) whose value is JSON: str,
bool, None, an int in the signed 64-bit range, a finite float, or a list or
dict of those (dict keys str) at most MAX_EXTRA_DEPTH deep. Other values
are left out, as are attributes past MAX_EXTRA_BYTES of JSON in all.
"""

import json
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from loghog.batch import MIN_RECORD_FIELDS, record_text

MAX_EXTRA_BYTES = 4096
MAX_EXTRA_DEPTH = 8
MAX_INT = 2 ** 63 - 1
MIN_INT = -2 ** 63
_SCALAR_SIZE = 24  # what a number, bool or null counts against MAX_EXTRA_BYTES

STANDARD_ATTRIBUTES = frozenset(logging.LogRecord('', 0, '', 0, '', (), None).__dict__) | {
    'message', 'asctime', 'taskName'}
"""A LogRecord's own attributes (taskName is 3.12's), and the two its formatter adds."""
_PLAIN_SIZE = len(logging.LogRecord('', 0, '', 0, '', (), None).__dict__) + 1  # + message

RecordArray = Tuple[Any, ...]
"""(module, time_us, body, levelno, levelname, exception, stack, pid, thread, extra), trailing nulls left out."""
Fields = Tuple[RecordArray, int]
"""(record array, nsecs): a version 1 frame's nanoseconds within the second, made as the 0.7 client makes
them (from `msecs`, whole milliseconds on most Pythons), go beside the array, whose time keeps the
microseconds of `created`."""


def record_fields(record: logging.LogRecord, body: str) -> Tuple[Fields, int]:
    """The fields of a formatted record, and about how many bytes they hold."""
    attributes = record.__dict__
    if len(attributes) <= _PLAIN_SIZE and not (attributes['exc_text'] or attributes['stack_info']):
        module, levelno, levelname = attributes['name'], attributes['levelno'], attributes['levelname']
        pid, thread = attributes['process'], attributes['threadName']
        if (type(module) is str and type(levelno) is int and type(levelname) is str and type(pid) is int
                and type(thread) is str and MIN_INT <= levelno <= MAX_INT):  # a plain record: what the rest makes
            nsecs = int(attributes['msecs'] * 1000000)
            return (((module, event_time_us(attributes['created'], nsecs), body, levelno, levelname, None, None,
                      pid, thread), nsecs), len(module) + len(body))
    return _any_record_fields(attributes, body)


def _any_record_fields(attributes: Dict[str, Any], body: str) -> Tuple[Fields, int]:
    module = attributes['name']
    if type(module) is not str:
        module = str(module)
    exception = stack = extra = None
    size = len(module) + len(body)
    if attributes['exc_text'] or attributes['stack_info']:
        body, exception, stack = _split_traceback(body, attributes)
        size = len(module) + len(body) + len(exception or '') + len(stack or '')
    if len(attributes) > _PLAIN_SIZE + ('asctime' in attributes):
        extra, extra_size = extra_attributes(attributes)
        size += extra_size
    levelno, pid, thread = attributes['levelno'], attributes['process'], attributes['threadName']
    nsecs = int(attributes['msecs'] * 1000000)
    array = _without_trailing_nulls([
        module, event_time_us(attributes['created'], nsecs), body,
        levelno if type(levelno) is int and MIN_INT <= levelno <= MAX_INT else None,
        str(attributes['levelname']), exception, stack,
        pid if type(pid) is int else None, thread if type(thread) is str else None, extra])
    return (array, nsecs), size


def event_time_us(created: float, nsecs: int) -> int:
    """A record's time in microseconds: `created`'s, held within the millisecond of the version 1 frame's
    `nsecs`, so that a line shows the same time whichever protocol carried it (Python 3.13 makes msecs
    from integer nanoseconds, and `created` may round to just below that millisecond). The microseconds
    come from `created` less its second, which is exact: `created` * 10**6 rounds to a quarter of a
    microsecond and may cross into the next millisecond."""
    seconds = int(created)
    within = int((created - seconds) * 1000000)
    millisecond = nsecs // 1000000 * 1000
    if not millisecond <= within < millisecond + 1000:
        within = millisecond if within < millisecond else millisecond + 999
    return seconds * 1000000 + within


def _without_trailing_nulls(array: List[Any]) -> RecordArray:
    while array[-1] is None and len(array) > MIN_RECORD_FIELDS:
        array.pop()
    return tuple(array)


def _split_traceback(body: str, attributes: Dict[str, Any]) -> Tuple[str, Optional[str], Optional[str]]:
    """(body, exception, stack): what the formatter appended, taken off the end of the body."""
    exception = stack = None
    if attributes['stack_info']:
        body, stack = _split_tail(body, str(attributes['stack_info']))
    if attributes['exc_text']:
        body, exception = _split_tail(body, str(attributes['exc_text']))
    return body, exception, stack


def _split_tail(body: str, tail: str) -> Tuple[str, Optional[str]]:
    """(body without "\n" + tail, tail) when the body ends with it, else (body, None)."""
    if body.endswith(tail) and body[-len(tail) - 1:-len(tail)] == '\n':
        return body[:-len(tail) - 1], tail
    return body, None


def full_body(fields: Fields) -> str:
    """The formatted record as the handler's formatter made it: body, exception, stack."""
    array = fields[0]
    count = len(array)
    return record_text(array[2], array[5] if count > 5 else None, array[6] if count > 6 else None)


def version1(fields: Fields) -> Tuple[str, int, int, str]:
    """(module, stamp, nsecs, body): what a version 1 frame says of a record."""
    array, nsecs = fields
    return array[0], array[1] // 1000000, nsecs, full_body(fields)


def extra_attributes(attributes: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], int]:
    """The JSON-safe non-standard attributes, within MAX_EXTRA_BYTES, and their size."""
    extra: Dict[str, Any] = {}
    size = 0
    for key, value in attributes.items():
        if key in STANDARD_ATTRIBUTES or type(key) is not str:
            continue
        kind = type(value)
        if kind is str:
            cost = len(value) + 2
        elif value is None or kind is bool or (kind is int and MIN_INT <= value <= MAX_INT) \
                or (kind is float and math.isfinite(value)):
            cost = _SCALAR_SIZE
        elif kind in (list, tuple, dict):
            value = json_copy(value, MAX_EXTRA_DEPTH)
            if value is None:
                continue
            cost = len(json.dumps(value))
        else:
            continue
        cost += len(key) + 4
        if size + cost > MAX_EXTRA_BYTES:
            continue
        extra[key] = value
        size += cost
    return (extra or None), size


def json_copy(value: Any, depth: int) -> Any:
    """A copy of a JSON container made of safe values only, or None when anything in it is not."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is int:
        return value if MIN_INT <= value <= MAX_INT else None
    if kind is float:
        return value if math.isfinite(value) else None
    if depth <= 0:
        return None
    if kind in (list, tuple):
        items: List[Any] = []
        for item in value:
            copied = json_copy(item, depth - 1)
            if copied is None and item is not None:
                return None
            items.append(copied)
        return items
    if kind is dict:
        mapping: Dict[str, Any] = {}
        for key, item in value.items():
            copied = json_copy(item, depth - 1)
            if type(key) is not str or (copied is None and item is not None):
                return None
            mapping[key] = copied
        return mapping
    return None


def from_wire_array(array: Sequence[Any]) -> Fields:
    """Queued fields back from a record array (read from the spool); nsecs keeps microseconds."""
    return _without_trailing_nulls(list(array)), array[1] % 1000000 * 1000


def spool_bytes(fields: Fields) -> bytes:
    """What the spool keeps of a record: its record array as UTF-8 JSON, enough to encode it either way."""
    return json.dumps(fields[0], separators=(',', ':'), ensure_ascii=False).encode('utf-8', 'replace')


def from_spool(data: bytes) -> Optional[Fields]:
    """The fields of a spooled record, or None when it is not one (a spool of another version)."""
    try:
        array = json.loads(data.decode('utf-8'))
    except ValueError:
        return None
    if type(array) is not list or not 3 <= len(array) <= 10 or type(array[0]) is not str \
            or type(array[1]) is not int or type(array[2]) is not str:
        return None
    return from_wire_array(array)
