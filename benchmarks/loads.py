"""The table of loads: adding a measured scenario is adding one entry here.

A load says what the clients do (transport, connections, frame options,
pacing); which servers take it is listed with it, because rsyslog and the
cookbook receiver speak neither TLS with our certificates nor LogHog frames.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

LOGHOGD = 'loghogd'
RSYSLOG = 'rsyslog'
COOKBOOK = 'cookbook'
ALL_SERVERS = (LOGHOGD, RSYSLOG, COOKBOOK)

TCP = 'tcp'
TLS = 'tls'
UDP = 'udp'
IDLE = 'idle'

CLASSIC = 'classic'
RFC3339 = 'rfc3339'
JSON = 'json'

UDP_RATE = 50000
BATCH_RECORDS = 500
BATCH_NOTE = 'protocol 1.2 batches of %d records pre-built by the generator (rsyslog: RFC 5424 lines)' % BATCH_RECORDS
IDLE_CONNECTIONS = 1000
STDLIB_NOTE = 'loghogd without msgspec and isal, as on Debian 12: json decodes, zlib inflates'


@dataclass(frozen=True)
class Load:
    """One scenario; `default`/`quick` say whether a plain or --quick run includes it."""
    name: str
    transport: str
    connections: int
    servers: Tuple[str, ...]
    compress: bool = False
    signed: bool = False
    ack: bool = False
    sync: bool = False
    syslog: bool = False
    batch: bool = False
    stdlib: bool = False
    rate: Optional[int] = None
    line_format: str = CLASSIC
    default: bool = True
    quick: bool = False
    note: str = ''


LOADS: Tuple[Load, ...] = (
    Load('tcp-c1', TCP, 1, ALL_SERVERS, quick=True),
    Load('tcp-c1-stdlib', TCP, 1, (LOGHOGD,), stdlib=True, note=STDLIB_NOTE),
    Load('tcp-c4', TCP, 4, ALL_SERVERS),
    Load('tcp-c16', TCP, 16, ALL_SERVERS, quick=True),
    Load('tls-c1', TLS, 1, (LOGHOGD,), quick=True),
    Load('tls-c16', TLS, 16, (LOGHOGD,)),
    Load('zlib-c1', TCP, 1, (LOGHOGD,), compress=True, quick=True),
    Load('signed-c1', TCP, 1, (LOGHOGD,), signed=True, quick=True),
    Load('udp-c1', UDP, 1, (LOGHOGD, RSYSLOG), rate=UDP_RATE, quick=True,
         note='paced at %d records/s' % UDP_RATE),
    Load('idle-1000', IDLE, IDLE_CONNECTIONS, ALL_SERVERS, quick=True,
         note='RSS with %d idle TCP connections' % IDLE_CONNECTIONS),
    Load('syslog-tcp-c1', TCP, 1, (LOGHOGD, RSYSLOG), syslog=True, quick=True,
         note="RFC 5424 octet-counted into loghogd's syslog listener"),
    Load('syslog-tcp-c16', TCP, 16, (LOGHOGD, RSYSLOG), syslog=True,
         note="RFC 5424 octet-counted into loghogd's syslog listener"),
    Load('ack-c1', TCP, 1, (LOGHOGD,), ack=True,
         note='extension 1.1: FLAG_ACK_REQUEST frames, ACKs read back'),
    Load('format-rfc3339-c1', TCP, 1, (LOGHOGD,), line_format=RFC3339,
         note='tcp-c1 with the facility at format = rfc3339'),
    Load('format-json-c1', TCP, 1, (LOGHOGD,), line_format=JSON,
         note='tcp-c1 with the facility at format = json'),
    Load('ack-sync-c1', TCP, 1, (LOGHOGD,), ack=True, sync=True,
         note='extension 1.1 with the facility at sync = yes'),
    # batch-c1 and the three loads the notes compare with it run back to back, on the same machine state
    Load('batch-c1', TCP, 1, (LOGHOGD, RSYSLOG), batch=True, quick=True, note=BATCH_NOTE),
    Load('batch-ack', TCP, 1, (LOGHOGD,), batch=True, ack=True, note='batches asking for ACKs, read back'),
    Load('batch-signed', TCP, 1, (LOGHOGD,), batch=True, signed=True, note='batches with HMAC-SHA256'),
    Load('batch-zlib', TCP, 1, (LOGHOGD,), batch=True, compress=True, note='batches compressed with zlib'),
    Load('batch-c16', TCP, 16, (LOGHOGD, RSYSLOG), batch=True, quick=True, note=BATCH_NOTE),
    Load('batch-c1-stdlib', TCP, 1, (LOGHOGD,), batch=True, stdlib=True, note=STDLIB_NOTE),
)

LOADS_BY_NAME: Dict[str, Load] = {load.name: load for load in LOADS}


def select_loads(names: Optional[Sequence[str]], quick: bool) -> List[Load]:
    """The loads named (any, even non-default ones), else the default or quick set."""
    if names:
        unknown = [name for name in names if name not in LOADS_BY_NAME]
        if unknown:
            raise ValueError('unknown load(s) %s; known: %s'
                             % (', '.join(unknown), ', '.join(LOADS_BY_NAME)))
        return [LOADS_BY_NAME[name] for name in names]
    return [load for load in LOADS if (load.quick if quick else load.default)]
