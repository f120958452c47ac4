"""Protocol 1.2: many structured records of one app in one frame, signed whole.

Sans-I/O like `loghog.protocol`: the client builds batch frames here and the
server's stdlib decoder lives here too, so the two cannot drift. The layout,
negotiation and test vectors are in docs/protocol-1.2.md.

A batch payload is UTF-8 JSON, an array:

    ["lh1.2", app_id, hostname, client_id | null, first_seq | null, [record, ...]]

and each record an array whose trailing nulls may be left out:

    [module, time_us, body, levelno, levelname, exception, stack, pid, thread, extra]

With a secret, FLAG_SIGNED is set and the payload ends with the 32 bytes of
HMAC-SHA256(secret, every payload byte before them): every field is covered,
hostname and the record boundaries included. zlib (FLAG_ZLIB) wraps the
whole payload, MAC included.
"""

import hashlib
import hmac
import itertools
import json
import math
import re
import struct
import zlib
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from loghog.protocol import FLAG_ACK, FLAG_ACK_REQUEST, FLAG_ZLIB, HEADER, FrameError, encode_frame

try:
    import msgspec
except ImportError:  # optional: the stdlib encodes the same documents, six times slower
    msgspec = None

ENCODER_NAME = 'msgspec %s' % msgspec.__version__ if msgspec is not None else 'json (stdlib)'
"""What encodes the client's batches here (the benchmarks print it)."""

FLAG_BATCH = 0x08
FLAG_SIGNED = 0x10
FLAG_CAPS = 0x08
"""On a server frame (with FLAG_ACK): the ACK also carries the server's capabilities."""

BATCH_CLIENT_FLAGS = FLAG_ZLIB | FLAG_ACK_REQUEST | FLAG_BATCH | FLAG_SIGNED
BATCH_MARK = 'lh1.2'
MAC_SIZE = 32
CAPS_FIELD = 'caps'
CAPS_REQUEST = 'batch'
CAPS_ACK = struct.Struct('!Q')

MAX_RECORDS = 10000
MAX_DEPTH = 16
MAX_INT = 2 ** 63 - 1
MIN_INT = -2 ** 63
MAX_TIME_US = 253402300799999999
"""The last microsecond of 9999-12-31 UTC: a record's time must be a date a line can show (from 1970)."""
RECORD_FIELDS = ('module', 'time_us', 'body', 'levelno', 'levelname', 'exception', 'stack', 'pid',
                 'thread', 'extra')
MIN_RECORD_FIELDS = 3

Secret = Union[str, bytes, None]
JsonEncoder = Callable[[Any], bytes]


class BatchRecord(NamedTuple):
    """One record of a batch as it travels; only the first three are always there."""

    module: str
    time_us: int
    body: str
    levelno: Optional[int] = None
    levelname: Optional[str] = None
    exception: Optional[str] = None
    stack: Optional[str] = None
    pid: Optional[int] = None
    thread: Optional[str] = None
    extra: Optional[Dict[str, Any]] = None


class Batch(NamedTuple):
    """A decoded batch; `records[i]` has seq `first_seq + i` when `client_id` is set."""

    app_id: str
    hostname: str
    client_id: Optional[str]
    first_seq: Optional[int]
    records: List[Optional[BatchRecord]]


class BatchError(FrameError):
    """A batch that cannot be used as a whole; `reason` names the counter."""


def _secret_bytes(secret: Union[str, bytes]) -> bytes:
    return secret if isinstance(secret, bytes) else secret.encode('utf-8')


def mac(secret: Union[str, bytes], data: bytes) -> bytes:
    """HMAC-SHA256 of a batch payload: what FLAG_SIGNED appends."""
    return hmac.new(_secret_bytes(secret), data, hashlib.sha256).digest()


def _record_array(record: Sequence[Any]) -> List[Any]:
    fields = list(record)
    while len(fields) > MIN_RECORD_FIELDS and fields[-1] is None:
        fields.pop()
    return fields


def record_text(body: str, exception: Optional[str] = None, stack: Optional[str] = None) -> str:
    """A record's whole text, as a version 1 frame's body holds it: the body, then its exception and stack."""
    if exception is not None:
        body = body + '\n' + exception
    if stack is not None:
        body = body + '\n' + stack
    return body


def encode_batch_payload(app_id: str, hostname: str, client_id: Optional[str], first_seq: Optional[int],
                         records: Sequence[Sequence[Any]]) -> bytes:
    """The JSON of a batch as UTF-8, without MAC or compression; a lone surrogate becomes '?'."""
    return encode_batch_arrays(app_id, hostname, client_id, first_seq, [_record_array(r) for r in records])


def fast_json_encoder() -> Optional[JsonEncoder]:
    """msgspec's JSON encoder where it is installed, else None; one per sending thread.

    For the documents encode_batch_arrays takes it writes the same bytes as
    the stdlib, except that a float may be spelled differently (1e+20 and
    1e20: the same number); tests/test_batch.py proves it. It raises on a lone
    surrogate, where the stdlib path writes '?'.
    """
    return msgspec.json.Encoder().encode if msgspec is not None else None


def encode_batch_arrays(app_id: str, hostname: str, client_id: Optional[str], first_seq: Optional[int],
                        arrays: Sequence[Sequence[Any]], fast: Optional[JsonEncoder] = None) -> bytes:
    """encode_batch_payload for record arrays whose trailing nulls are already left out.

    `fast` (fast_json_encoder()) may encode it when every float in the arrays is finite.
    """
    document = [BATCH_MARK, app_id, hostname, client_id, first_seq, arrays]
    if fast is not None:
        try:
            return fast(document)
        except UnicodeEncodeError:
            pass  # a lone surrogate
    text = json.dumps(document, separators=(',', ':'), allow_nan=False, ensure_ascii=False)
    return text.encode('utf-8', 'replace')


def encode_batch(app_id: str, hostname: str, client_id: Optional[str], first_seq: Optional[int],
                 records: Sequence[Sequence[Any]], secret: Secret = None, compress: bool = False) -> bytes:
    """A whole batch frame; ACK_REQUEST is set when `client_id` is given."""
    payload = encode_batch_payload(app_id, hostname, client_id, first_seq, records)
    return seal_batch(payload, client_id is not None, secret, compress)


def seal_batch(payload: bytes, ack_request: bool, secret: Secret = None, compress: bool = False) -> bytes:
    """Sign, compress and frame an encoded batch payload."""
    flags = FLAG_BATCH
    if secret is not None:
        payload += mac(secret, payload)
        flags |= FLAG_SIGNED
    if compress:
        payload = zlib.compress(payload)
        flags |= FLAG_ZLIB
    if ack_request:
        flags |= FLAG_ACK_REQUEST
    return encode_frame(payload, flags)


def split_mac(payload: bytes, flags: int) -> Tuple[bytes, Optional[bytes]]:
    """(JSON part, MAC or None) of an inflated batch payload."""
    if not flags & FLAG_SIGNED:
        return payload, None
    if len(payload) < MAC_SIZE:
        raise BatchError('bad_batch', 'signed batch is shorter than its MAC')
    return payload[:-MAC_SIZE], payload[-MAC_SIZE:]


def mac_matches(secret: Union[str, bytes], data: bytes, received: Optional[bytes]) -> bool:
    """Constant-time check of a batch MAC; a missing MAC never matches."""
    return received is not None and hmac.compare_digest(mac(secret, data), received)


def _reject_constant(name: str) -> float:
    raise ValueError('%s is not allowed' % name)


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_SURROGATE_ESCAPE = re.compile(rb'\\u[dD][89a-fA-F]')
"""How a lone surrogate gets into decoded JSON (UTF-8 itself cannot carry one)."""


def _has_surrogate(text: str) -> bool:
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return True
    return False


def check_json_value(value: Any, depth: int = 0) -> None:
    """The rules both decoders share past plain JSON: finite 64-bit numbers,
    no lone surrogates, at most MAX_DEPTH levels of nesting."""
    kind = type(value)
    if kind is str:
        if _has_surrogate(value):
            raise ValueError('string holds a lone surrogate')
    elif kind is int:
        if not MIN_INT <= value <= MAX_INT:
            raise ValueError('integer out of the 64-bit range')
    elif kind is float:
        if not math.isfinite(value):
            raise ValueError('number out of range')
    elif kind is list:
        if depth >= MAX_DEPTH:
            raise ValueError('nested deeper than %d' % MAX_DEPTH)
        for item in value:
            check_json_value(item, depth + 1)
    elif kind is dict:
        if depth >= MAX_DEPTH:
            raise ValueError('nested deeper than %d' % MAX_DEPTH)
        for key, item in value.items():
            check_json_value(key, depth + 1)
            check_json_value(item, depth + 1)


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, nothing after the value."""
    try:
        text = data.decode('utf-8')
        return _decoder.decode(text)
    except (ValueError, RecursionError) as error:
        raise BatchError('bad_json', 'batch is not JSON: %s' % error) from None


_OPTIONAL_TYPES = (int, str, str, str, int, str, dict)
_GOOD_OPTIONAL_TYPES = frozenset(
    kinds for count in range(len(_OPTIONAL_TYPES) + 1)
    for kinds in itertools.product(*[(kind, type(None)) for kind in _OPTIONAL_TYPES[:count]]))
"""Every tuple of the optional fields' types that a record may have: one set lookup checks them all."""


def check_record(fields: Any, may_hold_surrogates: bool = True) -> BatchRecord:
    """A record array to a BatchRecord, or ValueError naming what is wrong.

    The walk over every value (check_json_value) is left out when it cannot
    fail: no `extra`, both optional ints in range, and no lone surrogate
    possible (`may_hold_surrogates` false: the JSON has no surrogate escape).
    """
    if type(fields) is not list or not MIN_RECORD_FIELDS <= len(fields) <= len(RECORD_FIELDS):
        raise ValueError('a record must be an array of %d to %d fields' % (MIN_RECORD_FIELDS, len(RECORD_FIELDS)))
    module, time_us, body = fields[0], fields[1], fields[2]
    if type(module) is not str or type(time_us) is not int or type(body) is not str:
        raise ValueError('module, time_us and body must be string, int, string')
    if not 0 <= time_us <= MAX_TIME_US:
        raise ValueError('time_us is not from 1970 to 9999')
    if tuple(map(type, fields[MIN_RECORD_FIELDS:])) not in _GOOD_OPTIONAL_TYPES:
        for index in range(MIN_RECORD_FIELDS, len(fields)):
            value = fields[index]
            if value is not None and type(value) is not _OPTIONAL_TYPES[index - MIN_RECORD_FIELDS]:
                raise ValueError('field %s has the wrong type %s' % (RECORD_FIELDS[index], type(value).__name__))
    count = len(fields)
    if (may_hold_surrogates or (count > 9 and fields[9] is not None)
            or (count > 3 and fields[3] is not None and not MIN_INT <= fields[3] <= MAX_INT)
            or (count > 7 and fields[7] is not None and not MIN_INT <= fields[7] <= MAX_INT)):
        check_json_value(fields)
    return BatchRecord(*fields)


def check_header(document: Any) -> Tuple[str, str, Optional[str], Optional[int], list]:
    """The batch array's shared fields, each of the right type, or BatchError."""
    if type(document) is not list or len(document) != 6 or document[0] != BATCH_MARK:
        raise BatchError('bad_batch', 'batch must be an array of 6 starting with %r' % BATCH_MARK)
    _, app_id, hostname, client_id, first_seq, records = document
    if type(app_id) is not str or type(hostname) is not str or type(records) is not list:
        raise BatchError('bad_batch', 'batch app_id, hostname and records must be string, string, array')
    if (client_id is None) != (first_seq is None):
        raise BatchError('bad_ack_fields', 'batch client_id and first_seq go together')
    if client_id is not None and (type(client_id) is not str or type(first_seq) is not int
                                  or not 1 <= first_seq <= MAX_INT - len(records)):
        raise BatchError('bad_ack_fields', 'batch client_id must be a string and first_seq a positive int')
    if len(records) > MAX_RECORDS:
        raise BatchError('bad_batch', 'batch of %d records is over the limit of %d' % (len(records), MAX_RECORDS))
    try:
        check_json_value(app_id)
        check_json_value(hostname)
        if client_id is not None:
            check_json_value(client_id)
    except ValueError as error:
        raise BatchError('bad_batch', 'batch header: %s' % error) from None
    return app_id, hostname, client_id, first_seq, records


def decode_batch(data: bytes) -> Tuple[Batch, List[Tuple[int, str]]]:
    """Decode the JSON part of a batch with the standard library.

    Returns the batch, where a bad record is None, and for each bad record
    its index and what is wrong, so that one bad record costs only itself.
    """
    app_id, hostname, client_id, first_seq, raw_records = check_header(parse_json(data))
    may_hold_surrogates = _SURROGATE_ESCAPE.search(data) is not None
    records: List[Optional[BatchRecord]] = []
    bad: List[Tuple[int, str]] = []
    for index, fields in enumerate(raw_records):
        try:
            records.append(check_record(fields, may_hold_surrogates))
        except ValueError as error:
            bad.append((index, str(error)))
            records.append(None)
    return Batch(app_id, hostname, client_id, first_seq, records), bad


def encode_caps_ack(seq: int, capabilities: Dict[str, Any]) -> bytes:
    """An ACK that also tells a client asking for `caps` what this server accepts."""
    payload = CAPS_ACK.pack(seq) + json.dumps(capabilities, separators=(',', ':')).encode('ascii')
    return HEADER.pack(len(payload), FLAG_ACK | FLAG_CAPS) + payload


def decode_caps_ack(payload: bytes) -> Tuple[int, Dict[str, Any]]:
    """(acknowledged seq, capabilities) of a FLAG_ACK | FLAG_CAPS frame."""
    if len(payload) < CAPS_ACK.size:
        raise FrameError('bad_ack', 'capabilities ACK shorter than its seq')
    try:
        capabilities = json.loads(payload[CAPS_ACK.size:].decode('utf-8'))
    except ValueError as error:
        raise FrameError('bad_ack', 'capabilities are not JSON: %s' % error) from None
    if type(capabilities) is not dict:
        raise FrameError('bad_ack', 'capabilities are not a JSON object')
    return CAPS_ACK.unpack_from(payload)[0], capabilities
