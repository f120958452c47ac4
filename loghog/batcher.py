"""Protocol 1.2 on the client's side: what a server's capabilities allow, and batch frames of queued fields.

A connection starts in version 1.1 (its first frame asks for `caps`); once
the server's first ACK says `batch`, the sender hands its queued records
here and sends one frame per batch: one JSON encode, one MAC and one zlib
call for the whole batch, in the sender thread.
"""

import operator
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from loghog.batch import MAC_SIZE, encode_batch_arrays, fast_json_encoder, seal_batch
from loghog.fields import RecordArray

MAX_BATCH_RECORDS = 1000
MIN_SERVER_MESSAGE_SIZE = 1024
CUT_NAME_LENGTH = 256
CUT_MARK = ' [cut by loghog: the record was %d bytes, over the server\'s max_message_size of %d]'

Entry = Sequence[Any]
"""(seq, fields, ...): a record as the outbox or a spool hands it out."""
_FIELDS = operator.itemgetter(1)
_ARRAY = operator.itemgetter(0)
Frame = Tuple[int, bytes]
"""(seq of the batch's last record, frame)."""


class Encoding(NamedTuple):
    """How a handler encodes its records, for a spool left by a process with the same handler."""

    app_id: str
    hostname: str
    secret: Union[str, bytes, None]
    compress: bool


class Limits(NamedTuple):
    """What one batch may hold on a connection, from the server's capabilities."""

    max_payload: int
    max_records: int


def batch_limits(caps: Optional[Dict[str, Any]]) -> Optional[Limits]:
    """The limits a capabilities ACK allows, or None when the server takes no batches."""
    if not caps or type(caps.get('batch')) is not int or caps['batch'] != 1:
        return None
    size, records = caps.get('max_message_size'), caps.get('max_batch_records')
    if type(size) is not int or type(records) is not int or size < MIN_SERVER_MESSAGE_SIZE or records < 1:
        return None
    return Limits(size, min(records, MAX_BATCH_RECORDS))


class BatchEncoder:
    """Turns queued fields into batch frames for one app and host, each within a server's limits."""

    def __init__(self, app_id: str, hostname: str, secret: Union[str, bytes, None] = None,
                 compress: bool = False) -> None:
        self.app_id = app_id
        self.hostname = hostname
        self.secret = secret
        self.compress = compress
        self.cut_total = 0  # records cut to fit the server's max_message_size
        self._fast_json = fast_json_encoder()  # the arrays of queued fields hold only finite floats

    def frames(self, client_id: Optional[str], entries: Sequence[Entry], limits: Limits) -> List[Frame]:
        """One frame per run of consecutive seqs, split as the limits need; a record too big alone is cut."""
        frames: List[Frame] = []
        step = limits.max_records
        if entries and entries[-1][0] - entries[0][0] == len(entries) - 1:  # consecutive seqs: the usual case
            for start in range(0, len(entries), step):
                self._encode_run(client_id, entries[start:start + step], limits, frames)
            return frames
        run: List[Entry] = []
        for entry in entries:
            if run and (entry[0] != run[-1][0] + 1 or len(run) >= step):
                self._encode_run(client_id, run, limits, frames)
                run = []
            run.append(entry)
        if run:
            self._encode_run(client_id, run, limits, frames)
        return frames

    def _encode_run(self, client_id: Optional[str], run: List[Entry], limits: Limits, out: List[Frame]) -> None:
        arrays = list(map(_ARRAY, map(_FIELDS, run)))  # queued fields hold their record arrays as they go
        payload = self._payload(client_id, run[0][0], arrays)
        if len(payload) + MAC_SIZE > limits.max_payload:
            if len(run) > 1:
                half = len(run) // 2
                self._encode_run(client_id, run[:half], limits, out)
                self._encode_run(client_id, run[half:], limits, out)
                return
            payload = self._cut(client_id, run[0][0], arrays[0], len(payload), limits.max_payload)
        out.append((run[-1][0], seal_batch(payload, client_id is not None, self.secret, self.compress)))

    def _payload(self, client_id: Optional[str], first_seq: int, arrays: List[RecordArray]) -> bytes:
        return encode_batch_arrays(self.app_id, self.hostname, client_id,
                                   first_seq if client_id is not None else None, arrays, self._fast_json)

    def _cut(self, client_id: Optional[str], seq: int, array: RecordArray, size: int, max_payload: int) -> bytes:
        """A record alone over the limit keeps its module, time, level and the start of its body."""
        self.cut_total += 1
        mark = CUT_MARK % (size, max_payload)
        module, time_us, body, levelno, levelname = (list(array) + [None, None])[:5]
        head = [module[:CUT_NAME_LENGTH], time_us]
        level = [levelno, levelname[:CUT_NAME_LENGTH] if levelname else levelname]
        while True:
            body = body[:len(body) // 2]
            payload = self._payload(client_id, seq, [head + [body + mark] + level])
            if len(payload) + MAC_SIZE <= max_payload or not body:
                return payload
