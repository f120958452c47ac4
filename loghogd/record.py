"""The one shape a log record has inside loghogd, whatever input it came from.

Inputs (loghog frames of every version, syslog, a stream consumer) make
Records; formats render them; outputs take them. Only `app_id`, `module`,
`host`, `body` and `received` are always there: every other field is None
when the sender did not give it, and a format leaves out what is None.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple


@dataclass
class SyslogFields:
    """What a syslog message says beyond the loghog fields (RFC 5424 names).

    Not frozen: one is made per syslog message, and a frozen dataclass
    costs about eight times as much to make.
    """

    severity: int
    facility: int
    msgid: Optional[str] = None
    procid: Optional[str] = None
    structured_data: Optional[str] = None


@dataclass
class Record:
    """One log record on its way from a socket to a file.

    Times are seconds since the Unix epoch as floats: `received` is when
    loghogd read it, `sent` the event time the sender stamped (None when the
    sender gave none, e.g. a syslog message without TIMESTAMP).
    """

    app_id: str
    module: str
    host: str
    body: str
    received: float
    sent: Optional[float] = None
    level: Optional[str] = None
    levelno: Optional[int] = None
    exception: Optional[str] = None
    stack: Optional[str] = None
    pid: Optional[int] = None
    thread: Optional[str] = None
    extra: Optional[Dict[str, Any]] = None
    syslog: Optional[SyslogFields] = None
    peer: Optional[str] = None
    client_id: Optional[str] = None
    seq: Optional[int] = None


MAX_STAMP = 2 ** 53
"""Beyond this a sender's `stamp` is no float time, so the record has no sent time."""


def loghog_record(message: Dict[str, Any], host: str, received: float, peer: Optional[str] = None,
                  client_id: Optional[str] = None, seq: Optional[int] = None) -> Record:
    """A checked loghog frame's fields (as messages.parse_message returns them) as a Record."""
    stamp, nsecs = message['stamp'], message['nsecs']
    sent = stamp + nsecs / 1e9 if -MAX_STAMP < stamp < MAX_STAMP and 0 <= nsecs < 10 ** 9 else None
    return Record(message['app_id'], message['module'], host, message['body'], received, sent=sent, peer=peer,
                  client_id=client_id, seq=seq)


RecordRun = Tuple[str, str, str, List[str], Callable[[], List[Record]]]
"""Records in a row with one app_id, module and host: those three, the bodies
(all the classic line takes), and a function that makes the full Records
(for the other formats), so that the common case makes no Record at all."""
