"""Version 1 payloads: strict JSON to typed fields, or a rejection naming its counter.

The processor calls parse_message once per version 1 frame; every other
input raises Rejected for the same counters. Where msgspec is installed it
decodes the common payload, a flat object, in half the json path's time
(docs/benchmarks.md): that fast path only ever accepts. Whatever it cannot
decode, or decodes to a message that fails a check, goes to the json path,
which decides and names the rejection (tests/test_messages.py proves with
hypothesis that both paths give the same outcome for any payload).

decode_plain goes further for the frame every 0.7 client sends unsigned: it
decodes straight to typed attributes, no dict, for the processor's path
that only queues a classic line (loghogd.plainframes). What it accepts, json
accepts with the same values; whatever else it raises on, parse_message
decides.
"""

import json
from typing import Annotated, Callable, Dict, Optional, Tuple, Union

from loghogd.reporting import peer_text

try:
    import msgspec
except ImportError:  # Debian 12 has no python3-msgspec
    msgspec = None


MAX_NSECS = 999_999_999
MAX_STAMP = 253_402_300_799  # 9999-12-31 23:59:59 UTC, the last second a date can show

Parsed = Tuple[Dict[str, object], str, str, str]


class Rejected(Exception):
    """A message that will not be written; `reason` names the counter."""

    def __init__(self, reason: str, detail: str, app_id: Optional[str] = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.app_id = app_id


_scan_json = json.JSONDecoder().scan_once
_JSON_SPACE = ' \t\n\r'
_FIELD_TYPES = (('app_id', str), ('module', str), ('body', str), ('stamp', int), ('nsecs', int),
                ('version', int), ('hostname', str))


def _not_json(error: Exception) -> Rejected:
    return Rejected('bad_json', 'payload is not JSON: %s' % error)


def _loads(text: str) -> object:
    """json.loads, for what the scanner cannot start on: leading space, a UTF-8 BOM, or no JSON.

    It takes the decoded text, not the payload's bytes: given bytes, json
    would also take UTF-16 and UTF-32, whose ASCII-range bytes can carry
    characters the processor's escaping check does not look for.
    """
    try:
        return json.loads(text.removeprefix('\ufeff'))
    except (ValueError, RecursionError) as error:
        raise _not_json(error) from None


def _bad_field(message: Dict[str, object]) -> Rejected:
    for name, kind in _FIELD_TYPES:
        value = message.get(name, '' if name == 'hostname' else None)
        if value is None and name != 'hostname':
            return Rejected('missing_field', 'required field %r is missing' % name)
        if type(value) is not kind:
            return Rejected('bad_field', 'field %r has the wrong type %s' % (name, type(value).__name__))
    raise AssertionError('no bad field in a message that failed the check')


def _bad_time(message: Dict[str, object]) -> Rejected:
    """Version 1 signs stamp, nsecs and body run together: an nsecs of 10 digits could take a body's digit."""
    name, high = ('nsecs', MAX_NSECS) if not 0 <= message['nsecs'] <= MAX_NSECS else ('stamp', MAX_STAMP)
    return Rejected('bad_field', 'field %r is %s, not from 0 to %d' % (name, peer_text(message[name]), high))


def _checked(message: object) -> Parsed:
    """(message, app_id, module, hostname) of a decoded payload whose fields all have the right type."""
    if type(message) is not dict:
        raise Rejected('bad_json', 'payload is JSON %s, not an object' % type(message).__name__)
    get = message.get
    app_id = get('app_id')
    module = get('module')
    hostname = get('hostname', '')
    stamp = get('stamp')
    nsecs = get('nsecs')
    if (type(app_id) is not str or type(module) is not str or type(hostname) is not str
            or type(get('body')) is not str or type(stamp) is not int
            or type(nsecs) is not int or type(get('version')) is not int):
        raise _bad_field(message)
    if not 0 <= nsecs <= MAX_NSECS or not 0 <= stamp <= MAX_STAMP:
        raise _bad_time(message)
    return message, app_id, module, hostname


def parse_json(payload: bytes) -> Parsed:
    """JSON payload to (message, app_id, module, hostname) with the json module: the reference for every payload.

    It calls the C scanner without json.loads's per-call overhead.
    """
    try:
        text = payload.decode('utf-8')
        message, end = _scan_json(text, 0)
    except StopIteration:
        message, end = _loads(text), 0
    except (ValueError, RecursionError) as error:
        raise _not_json(error) from None
    if end and end != len(text) and text[end:].strip(_JSON_SPACE):
        raise Rejected('bad_json', 'payload has data after its JSON value')
    return _checked(message)


if msgspec is not None:
    _decode_flat = msgspec.json.Decoder(Dict[str, Union[str, int, bool, None]]).decode
    # msgspec 0.19 (Debian 13) raises UnicodeDecodeError on bad UTF-8
    NOT_PLAIN: Tuple[type, ...] = (msgspec.DecodeError, UnicodeDecodeError)
    _NOT_FLAT = NOT_PLAIN + (Rejected,)

    def parse_flat(payload: bytes) -> Optional[Parsed]:
        """What parse_json returns, for a flat object msgspec decodes whose fields pass; else None.

        msgspec rejects some payloads json takes (lone surrogate escapes,
        NaN, 1e400, a BOM), and its limits on nesting and numbers may
        differ: so it takes only objects of str, int, bool and null values,
        checked in C while it parses, which is what clients send.
        """
        try:
            return _checked(_decode_flat(payload))
        except _NOT_FLAT:
            return None

    def parse_message(payload: bytes) -> Parsed:
        """JSON payload to (message, app_id, module, hostname), every field of the right type."""
        return parse_flat(payload) or parse_json(payload)

    class PlainMessage(msgspec.Struct, forbid_unknown_fields=True):
        """The unsigned payload of a 0.7 client: exactly the fields that make a classic line, types and
        ranges checked in C while msgspec parses."""

        version: int
        app_id: str
        module: str
        stamp: Annotated[int, msgspec.Meta(ge=0, le=MAX_STAMP)]
        nsecs: Annotated[int, msgspec.Meta(ge=0, le=MAX_NSECS)]
        body: str
        hostname: str = ''

    decode_plain: Optional[Callable[[bytes], PlainMessage]] = msgspec.json.Decoder(PlainMessage).decode
    """Raises one of NOT_PLAIN for a payload that is not exactly PlainMessage's fields."""
else:
    parse_message = parse_json
    decode_plain = None
    NOT_PLAIN = ()
