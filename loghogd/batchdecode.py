"""Decode protocol 1.2 batches with msgspec where it is installed, else the stdlib.

msgspec checks the field types in C while it parses, about four times
faster than json plus Python type checks. The two must accept and reject
exactly the same batches (tests/test_batchdecode.py proves it with
hypothesis), so msgspec only takes the fast path: a batch it cannot decode
whole goes to `loghog.batch.decode_batch`, which finds the bad records one
by one, and a batch it decodes passes the same extra checks as the stdlib's.
"""

from typing import Annotated, Any, Dict, List, Optional, Tuple

from loghog.batch import MAX_INT, MAX_TIME_US, MIN_INT, Batch, BatchError, check_header, check_json_value, decode_batch

try:
    import msgspec
except ImportError:  # Debian 12 has no python3-msgspec
    msgspec = None

DECODER_NAME = 'msgspec %s' % msgspec.__version__ if msgspec is not None else 'json (stdlib)'

BadRecords = List[Tuple[int, str]]


if msgspec is not None:
    Int64 = Annotated[int, msgspec.Meta(ge=MIN_INT, le=MAX_INT)]
    TimeUs = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_US)]

    class _Record(msgspec.Struct, array_like=True):
        module: str
        time_us: TimeUs
        body: str
        levelno: Optional[Int64] = None
        levelname: Optional[str] = None
        exception: Optional[str] = None
        stack: Optional[str] = None
        pid: Optional[Int64] = None
        thread: Optional[str] = None
        extra: Optional[Dict[str, Any]] = None

    class _Batch(msgspec.Struct, array_like=True):
        mark: str
        app_id: str
        hostname: str
        client_id: Optional[str]
        first_seq: Optional[Int64]
        records: List[_Record]

    _decode_typed = msgspec.json.Decoder(_Batch).decode
    _DecodeError = msgspec.DecodeError

    def _fast(data: bytes) -> Optional[Batch]:
        """The batch if msgspec decodes it whole and every shared rule holds, else None.

        Its records are msgspec structs with the attributes of BatchRecord,
        which saves building a tuple per record.
        """
        try:
            typed = _decode_typed(data)
        except (_DecodeError, UnicodeDecodeError, RecursionError):  # 0.19 raises UnicodeDecodeError on bad UTF-8
            return None
        records = typed.records
        try:
            check_header([typed.mark, typed.app_id, typed.hostname, typed.client_id, typed.first_seq, records])
            for record in records:
                if record.extra is not None:
                    check_json_value(record.extra, 1)
        except (BatchError, ValueError):
            return None
        return Batch(typed.app_id, typed.hostname, typed.client_id, typed.first_seq, records)
else:
    def _fast(data: bytes) -> Optional[Batch]:
        return None


def decode(data: bytes) -> Tuple[Batch, BadRecords]:
    """(batch, bad records) of a batch's JSON; BatchError when the batch as a whole is bad."""
    batch = _fast(data)
    if batch is not None:
        return batch, []
    return decode_batch(data)


__all__ = ['DECODER_NAME', 'BatchError', 'decode']
