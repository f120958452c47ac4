"""Version 1 payloads: strict JSON to typed fields, or a rejection naming its counter.

The processor calls parse_message once per version 1 frame; every other
input raises Rejected for the same counters.
"""

import json
from typing import Dict, Optional, Tuple

from loghogd.reporting import peer_text


MAX_NSECS = 999_999_999
MAX_STAMP = 253_402_300_799  # 9999-12-31 23:59:59 UTC, the last second a date can show


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


def _decode_json(payload: bytes) -> object:
    """json.loads for UTF-8 without its per-call overhead: the C scanner does the work."""
    try:
        text = payload.decode('utf-8')
        value, end = _scan_json(text, 0)
    except StopIteration:
        value, end = json.loads(payload), 0
    except (ValueError, RecursionError) as error:
        raise Rejected('bad_json', 'payload is not JSON: %s' % error) from None
    if end and end != len(text) and text[end:].strip(_JSON_SPACE):
        raise Rejected('bad_json', 'payload has data after its JSON value')
    return value


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


def parse_message(payload: bytes) -> Tuple[Dict[str, object], str, str, str]:
    """JSON payload to (message, app_id, module, hostname), every field of the right type."""
    try:
        message = _decode_json(payload)
    except (ValueError, RecursionError) as error:
        raise Rejected('bad_json', 'payload is not JSON: %s' % error) from None
    if type(message) is not dict:
        raise Rejected('bad_json', 'payload is JSON %s, not an object' % type(message).__name__)
    get = message.get
    app_id = get('app_id')
    module = get('module')
    hostname = get('hostname', '')
    if (type(app_id) is not str or type(module) is not str or type(hostname) is not str
            or type(get('body')) is not str or type(get('stamp')) is not int
            or type(get('nsecs')) is not int or type(get('version')) is not int):
        raise _bad_field(message)
    if not 0 <= get('nsecs') <= MAX_NSECS or not 0 <= get('stamp') <= MAX_STAMP:
        raise _bad_time(message)
    return message, app_id, module, hostname
