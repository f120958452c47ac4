"""The records every server receives, encoded for each server's wire format.

Every record carries the same realistic ~175-byte access-log body ending in a
unique, fixed-width sequence number (`seq=000000042`), so that the output of
any server can be checked line by line for loss and duplication, whatever
prefix the server puts in front of the body.
"""

import logging
import pickle
import struct
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from loghog.batch import encode_batch
from loghog.protocol import encode_message

APP_ID = 'bench'
MODULE = 'root'
HOSTNAME = 'web-01.example.com'
SECRET = 'bench-secret'
SEQ_DIGITS = 9

WIRE_LOGHOG = 'loghog'
WIRE_SYSLOG = 'syslog'
WIRE_PICKLE = 'pickle'


def body(seq: int) -> str:
    """A web access line; the sequence number is always the last field."""
    return ('203.0.113.%d - - "GET /api/items/%d?view=full HTTP/1.1" 200 %d 0.%03ds '
            'user=user%04d@example.com ua="Mozilla/5.0 (X11; Linux x86_64) Firefox/118.0" '
            'req=%08x seq=%0*d'
            % (seq % 251, seq % 100000, 1000 + seq % 9000, seq % 1000, seq % 7919,
               (seq * 2654435761) & 0xffffffff, SEQ_DIGITS, seq))


def seq_marker(seq: int, json_lines: bool = False) -> bytes:
    """The bytes that end record `seq`'s body in every server's file: the line's end,
    or in a JSON line the closing quote of its "message"."""
    return b'seq=%0*d%s' % (SEQ_DIGITS, seq, b'"' if json_lines else b'\n')


def loghog_records(first: int, count: int, compress: bool = False, signed: bool = False,
                   client_id: Optional[str] = None) -> List[bytes]:
    """LogHog v1 frames, one per record, as the 0.7 client sends them.

    With `client_id`, frames request acknowledgement (extension 1.1) and
    carry `seq` from 1 for this client, as one acknowledged handler would.
    """
    now = time.time()
    stamp, nsecs = int(now), int(now % 1 * 1000) * 1000000
    secret = SECRET if signed else None
    frames = []
    for index in range(count):
        ack_seq = index + 1 if client_id is not None else None
        frames.append(encode_message(APP_ID, MODULE, stamp, nsecs, HOSTNAME, body(first + index),
                                     secret=secret, compress=compress, client_id=client_id,
                                     seq=ack_seq))
    return frames


def loghog_batches(first: int, count: int, per_batch: int, compress: bool = False, signed: bool = False,
                   client_id: Optional[str] = None) -> List[bytes]:
    """Protocol 1.2 batch frames of `per_batch` records, as our client sends them to a loghogd that takes them.

    With `client_id` they ask for acknowledgement, seqs from 1 for this client.
    """
    time_us = int(time.time() * 1e6)
    secret = SECRET if signed else None
    frames = []
    for start in range(0, count, per_batch):
        records = [(MODULE, time_us, body(first + index)) for index in range(start, min(start + per_batch, count))]
        frames.append(encode_batch(APP_ID, HOSTNAME, client_id, start + 1 if client_id is not None else None,
                                   records, secret, compress))
    return frames


def syslog_records(first: int, count: int, octet_counted: bool) -> List[bytes]:
    """RFC 5424 messages with the same body; octet-counted (RFC 6587) for TCP."""
    stamp = datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    head = '<134>1 %s %s %s - - - ' % (stamp, HOSTNAME, APP_ID)
    records = []
    for index in range(count):
        message = (head + body(first + index)).encode('utf-8')
        records.append(b'%d %s' % (len(message), message) if octet_counted else message)
    return records


def pickle_records(first: int, count: int) -> List[bytes]:
    """Length-prefixed pickled records, byte for byte what logging.handlers.SocketHandler sends."""
    pack = struct.Struct('>L').pack
    records = []
    for index in range(count):
        record = logging.LogRecord(APP_ID, logging.INFO, __file__, 0, body(first + index), None, None)
        attributes = dict(record.__dict__)
        attributes['msg'] = record.getMessage()
        attributes['args'] = None
        attributes['exc_info'] = None
        attributes.pop('message', None)
        data = pickle.dumps(attributes, 1)
        records.append(pack(len(data)) + data)
    return records


RecordKey = Tuple[str, bool, bool, bool]


class RecordCache:
    """Builds each encoding of the records once per run and hands out slices.

    Encoding a million frames takes seconds, so the repetitions and the
    loads that share an encoding (TCP at every C, TLS, UDP, the ceiling)
    reuse one list.
    """

    def __init__(self) -> None:
        self._records: Dict[RecordKey, List[bytes]] = {}

    def records(self, wire: str, count: int, datagram: bool = False, compress: bool = False,
                signed: bool = False) -> Sequence[bytes]:
        """The first `count` records (seq 0..count-1) in the given encoding."""
        key = (wire, datagram, compress, signed)
        have = self._records.get(key, [])
        if len(have) < count:
            have = have + self._build(key)(len(have), count - len(have))
            self._records[key] = have
        return have[:count]

    @staticmethod
    def _build(key: RecordKey) -> Callable[[int, int], List[bytes]]:
        wire, datagram, compress, signed = key
        if wire == WIRE_LOGHOG:
            return lambda first, count: loghog_records(first, count, compress, signed)
        if wire == WIRE_SYSLOG:
            return lambda first, count: syslog_records(first, count, octet_counted=not datagram)
        if wire == WIRE_PICKLE:
            return pickle_records
        raise ValueError('unknown wire format %r' % wire)


def split_ranges(count: int, connections: int) -> List[range]:
    """Contiguous, nearly equal sequence ranges, one per connection."""
    bounds = [count * index // connections for index in range(connections + 1)]
    return [range(bounds[index], bounds[index + 1]) for index in range(connections)]
