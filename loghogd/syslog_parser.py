"""Syslog messages (RFC 5424 or RFC 3164, told apart per message) to Records or to runs of lines; no I/O.

Real senders bend both RFCs, so the parser accepts what rsyslog accepts:
a 3164 message without a timestamp or a hostname (Python's SysLogHandler
sends `<14>app: text`), a 3164 timestamp without a year (the year that
puts it nearest the receive time), an RFC 3339 timestamp in a 3164 header
(rsyslog's forwarding format), a 5424 message without structured data, a
BOM before the MSG, and trailing NUL, CR or LF. A 5424 MSG loses one
leading space: rsyslog's templates put one there, as the separator its
own files use, when they forward a message that came in as BSD syslog. Bytes that are not UTF-8
become U+FFFD. Only a message without a `<PRI>` is refused: every other
input ends as a Record, and SyslogError is the only exception raised.
"""

import calendar
import datetime
import functools
import re
import time
from typing import List, Optional, Sequence, Tuple

from loghogd.facilities import ROOT
from loghogd.record import Record, RecordRun, SyslogFields

MAX_PRI = 191
TRAILING_JUNK = '\r\n\0'
BOM = '\ufeff'
NIL = '-'
TIMESTAMP_CACHE_SIZE = 4096
YEAR_GUESS_STEP = 3600
"""A 3164 timestamp's year is guessed from the receive time to the hour."""

_PRI = re.compile(r'<([0-9]{1,3})>')
_COMMON_RFC5424 = re.compile(r'<(?:[0-9]{1,2}|0[0-9]{2}|1[0-8][0-9]|19[01])>1 [!-~]+ ([!-~]+ [!-~]+ [!-~]+ [!-~]+) '
                             r'-(?: |\Z)\ufeff? ?(.*)', re.S)
"""The shape most 5424 senders use (printable ASCII header, no structured data): HOSTNAME to MSGID, and MSG."""
_RFC5424_HEADER = re.compile(r'<([0-9]{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+)(?: |\Z)')
_RFC3339 = re.compile(r'([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?'
                      r'(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))')
_SD_ELEMENT = re.compile(r'\[[^ =\]"]+(?: +[^ =\]"]+="(?:[^"\\]|\\.)*")* *\]', re.S)
_MONTHS = {name: number for number, name in enumerate(
    ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'), start=1)}
_BSD_TIMESTAMP = re.compile(r'(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +([0-9]{1,2})'
                            r'(?: ([0-9]{4}))? ([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,6})?:? ')
_RFC3339_IN_BSD = re.compile(_RFC3339.pattern + ' ')
_HOSTNAME = re.compile(r'[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.:-]*[A-Za-z0-9_.-])?(?= )')
_TAG = re.compile(r'([^ :\[]{1,255})(?:\[([^\]\s]{0,128})\])?(?::|(?= )|\Z) ?')


class SyslogError(ValueError):
    """A message that is not syslog at all; `reason` names the counter."""

    reason = 'bad_syslog'


def parse_syslog(data: bytes, received: float, peer_host: str) -> Record:
    """The Record one syslog message makes; SyslogError if it has no `<PRI>`.

    `peer_host` (the sender's address) is the host when the message names
    none; `received` dates it and completes a 3164 timestamp without a year.
    """
    text = data.decode('utf-8', 'replace').rstrip(TRAILING_JUNK)
    header = _RFC5424_HEADER.match(text)
    if header is not None:
        return _rfc5424(text, header, received, peer_host)
    pri = _PRI.match(text)
    if pri is None:
        raise SyslogError('message does not start with <PRI> (%r)' % text[:20])
    facility, severity = _facility_and_severity(pri.group(1))
    return _rfc3164(text, pri.end(), facility, severity, received, peer_host)


def parse_runs(messages: Sequence[bytes], received: float, peer_host: str
               ) -> Tuple[List[RecordRun], List[SyslogError]]:
    """The Records parse_syslog makes of `messages`, in runs that go to one place, made only when asked for.

    The classic line needs only each run's app_id, module, host and bodies:
    the common RFC 5424 shape is read by one pattern without converting its
    timestamp, and a message whose header fields are those of the one
    before joins its run at once; any other message goes through
    parse_syslog. Returns the runs in order, and the SyslogError of every
    message that is not syslog.
    """
    runs: List[Tuple[str, str, str, List[str]]] = []
    starts = []
    errors = []
    last_fields = None
    bodies: List[str] = []
    for index, data in enumerate(messages):
        text = data.decode('utf-8', 'replace').rstrip(TRAILING_JUNK)
        common = _COMMON_RFC5424.match(text)
        if common is not None:
            fields, body = common.groups()
            if fields == last_fields:
                bodies.append(body)
                continue
            hostname, app_name, _procid, msgid = fields.split(' ')
            key = (app_name if app_name != NIL else '', msgid if msgid != NIL else ROOT,
                   hostname if hostname != NIL else peer_host)
            last_fields = fields
        else:
            try:
                record = parse_syslog(data, received, peer_host)
            except SyslogError as error:
                errors.append(error)
                continue
            key, body, last_fields = (record.app_id, record.module, record.host), record.body, None
        if runs and runs[-1][:3] == key:
            runs[-1][3].append(body)
        else:
            bodies = [body]
            runs.append(key + (bodies,))
            starts.append(index)
    ends = starts[1:] + [len(messages)]
    return [run + (functools.partial(_records, messages[start:end], received, peer_host),)
            for run, start, end in zip(runs, starts, ends)], errors


def _records(messages: Sequence[bytes], received: float, peer_host: str) -> List[Record]:
    """The Records of a run's messages; those that are not syslog were counted when the run was made."""
    records = []
    for data in messages:
        try:
            records.append(parse_syslog(data, received, peer_host))
        except SyslogError:
            continue
    return records


def _facility_and_severity(pri: str) -> Tuple[int, int]:
    value = int(pri)
    if value > MAX_PRI:
        raise SyslogError('PRI %d is over %d' % (value, MAX_PRI))
    return divmod(value, 8)


def _rfc5424(text: str, header: 're.Match[str]', received: float, peer_host: str) -> Record:
    pri, stamp, hostname, app_name, procid, msgid = header.groups()
    facility, severity = _facility_and_severity(pri)
    structured_data, body = _structured_data_and_message(text, header.end())
    if procid == NIL:
        procid = None
    if msgid == NIL:
        msgid = None
    return Record(
        app_id=app_name if app_name != NIL else '',
        module=msgid or ROOT,
        host=hostname if hostname != NIL else peer_host,
        body=body,
        received=received,
        sent=None if stamp == NIL else _rfc3339_seconds(stamp),
        pid=_pid(procid),
        syslog=SyslogFields(severity, facility, msgid, procid, structured_data),
        peer=peer_host,
    )


def _structured_data_and_message(text: str, start: int) -> Tuple[Optional[str], str]:
    """STRUCTURED-DATA and MSG; without well-formed SD the whole rest is the MSG."""
    if text.startswith(NIL, start) and (len(text) == start + 1 or text[start + 1] == ' '):
        return None, _rfc5424_message(text[start + 2:])
    end = start
    element = _SD_ELEMENT.match(text, end)
    while element is not None:
        end = element.end()
        element = _SD_ELEMENT.match(text, end)
    if end > start and (end == len(text) or text[end] == ' '):
        return text[start:end], _rfc5424_message(text[end + 1:])
    return None, _rfc5424_message(text[start:])


def _rfc5424_message(text: str) -> str:
    """MSG without a BOM, and without the one space rsyslog keeps before a message it got as BSD syslog."""
    text = _message(text)
    return text[1:] if text.startswith(' ') else text


def _message(text: str) -> str:
    return text[1:] if text.startswith(BOM) else text


def _rfc3339_seconds(stamp: str) -> Optional[float]:
    """An RFC 3339 time as seconds since the epoch, None if it is not one.

    Every message of a burst has its own fraction but shares the rest, so
    the rest is converted once (cached) and the fraction added.
    """
    if len(stamp) < 20 or stamp[19] not in '.Zz+-':
        match = _RFC3339.fullmatch(stamp)
        return None if match is None else _rfc3339_match_seconds(match)
    zone_at = len(stamp) - 1 if stamp[-1] in 'Zz' else len(stamp) - 6
    whole = _rfc3339_whole_seconds(stamp[:19] + stamp[zone_at:])
    fraction = stamp[19:zone_at]
    if whole is None or not fraction:
        return whole
    digits = fraction[1:]
    if fraction[0] != '.' or not digits.isdigit() or not digits.isascii() or len(digits) > 9:
        return None
    return whole + float(fraction)


def _rfc3339_match_seconds(match: 're.Match[str]') -> Optional[float]:
    fraction = match.group(7)
    if not fraction:
        return _rfc3339_whole_seconds(match.group())
    text = match.string
    whole = _rfc3339_whole_seconds(text[match.start():match.start(7)] + text[match.end(7):match.end()])
    return None if whole is None else whole + float(fraction)


@functools.lru_cache(maxsize=TIMESTAMP_CACHE_SIZE)
def _rfc3339_whole_seconds(stamp: str) -> Optional[float]:
    """Seconds since the epoch of an RFC 3339 time without fraction; a burst shares the work."""
    match = _RFC3339.match(stamp)
    if match is None or match.group(7) or match.end() < len(stamp.rstrip(' ')):
        return None
    year, month, day, hour, minute, second, _fraction, zulu, sign, offset_hours, offset_minutes = match.groups()
    try:
        datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59))
    except ValueError:
        return None
    seconds = float(calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second))))
    if not zulu:
        offset = int(offset_hours) * 3600 + int(offset_minutes) * 60
        seconds -= offset if sign == '+' else -offset
    return seconds


def _rfc3164(text: str, start: int, facility: int, severity: int, received: float, peer_host: str) -> Record:
    """BSD syslog: [TIMESTAMP SP [HOSTNAME SP]] [TAG[\\[PID\\]]:] MSG, every part optional."""
    sent, position = _bsd_timestamp(text, start, received)
    hostname = None
    if sent is not None:
        host = _HOSTNAME.match(text, position)
        if host is not None:
            hostname = host.group()
            position = host.end() + 1
    app_id, procid = '', None
    tag = _TAG.match(text, position)
    if tag is not None:
        app_id, procid = tag.group(1), tag.group(2)
        position = tag.end()
    return Record(
        app_id=app_id,
        module=ROOT,
        host=hostname or peer_host,
        body=_message(text[position:]),
        received=received,
        sent=sent,
        pid=_pid(procid),
        syslog=SyslogFields(severity, facility, None, procid or None, None),
        peer=peer_host,
    )


def _bsd_timestamp(text: str, start: int, received: float) -> Tuple[Optional[float], int]:
    """(seconds or None, where the header goes on); a missing year is the one nearest `received`."""
    match = _BSD_TIMESTAMP.match(text, start)
    if match is None:
        rfc3339 = _RFC3339_IN_BSD.match(text, start)
        if rfc3339 is None:
            return None, start
        return _rfc3339_match_seconds(rfc3339), rfc3339.end()
    fraction = match.group(7)
    seconds = _bsd_whole_seconds(match.group(1, 2, 3, 4, 5, 6), int(received // YEAR_GUESS_STEP))
    if seconds is None or not fraction:
        return seconds, match.end()
    return seconds + float(fraction), match.end()


@functools.lru_cache(maxsize=TIMESTAMP_CACHE_SIZE)
def _bsd_whole_seconds(fields: Tuple[str, ...], received_step: int) -> Optional[float]:
    """A BSD timestamp without its fraction, in this host's zone; a missing year is the nearest one."""
    month_name, day, year, hour, minute, second = fields
    received = received_step * YEAR_GUESS_STEP
    numbers = (_MONTHS[month_name], int(day), int(hour), int(minute), int(second))
    if year:
        years: Tuple[int, ...] = (int(year),)
    else:
        this_year = time.localtime(received).tm_year
        years = (this_year, this_year - 1, this_year + 1)
    best = None
    for candidate in years:
        seconds = _local_seconds(candidate, *numbers)
        if seconds is not None and (best is None or abs(seconds - received) < abs(best - received)):
            best = seconds
    return best


def _local_seconds(year: int, month: int, day: int, hour: int, minute: int, second: int) -> Optional[float]:
    """A wall-clock time of this host's zone as seconds since the epoch; None if no such date."""
    try:
        datetime.datetime(year, month, day, hour, minute, min(second, 59))
        return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
    except (ValueError, OverflowError):
        return None


def _pid(procid: Optional[str]) -> Optional[int]:
    if procid and procid.isdigit() and procid.isascii() and len(procid) <= 10:
        return int(procid)
    return None
