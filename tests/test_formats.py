"""Line formats: the exact bytes of each, escaping, multi-line safety, DST."""

import calendar
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.config import ConfigError
from loghogd.facilities import load_facilities
from loghogd.formats import (FORMATS, MULTILINES, Formatter, LineFormat, classic_host, escape_controls,
                             format_changes)
from loghogd.processor import ReceiveClock
from loghogd.record import Record, SyslogFields, loghog_record

UNSAFE = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]')
RECORD_START = re.compile(r'\d{4}-\d\d-\d\d[ T]')
FALL_BACK = calendar.timegm((2026, 10, 25, 0, 30, 0))
"""2026-10-25 00:30 UTC: 02:30 CEST in Berlin; an hour later it is 02:30 CET."""
MESSAGE_07 = {'app_id': 'app', 'module': 'db.pool', 'stamp': FALL_BACK, 'nsecs': 675000000, 'version': 1,
              'hostname': 'web-1', 'body': 'connection lost\nretrying'}


pytestmark = pytest.mark.usefixtures('berlin_time')


def render(record: Record, **options: str) -> str:
    return Formatter(LineFormat(**options)).render(record)


def record_07(received: float = FALL_BACK + 1.25) -> Record:
    return loghog_record(MESSAGE_07, MESSAGE_07['hostname'], received, '10.0.0.7:40000')


def record_12() -> Record:
    return Record('app', 'db.pool', 'web-1', 'query failed', FALL_BACK + 0.5, sent=FALL_BACK + 0.25, level='ERROR',
                  levelno=40, exception='Traceback (most recent call last):\n  File "x.py"\nKeyError: 1',
                  pid=4242, thread='worker-1', extra={'user': 'ann', 'ids': [1, 2]}, client_id='c-1', seq=7)


def record_syslog() -> Record:
    return Record('app', 'cron', 'mail.example', 'job done', FALL_BACK + 3600, sent=FALL_BACK + 3599,
                  syslog=SyslogFields(severity=5, facility=9, msgid='JOB', procid='811',
                                      structured_data='[exampleSDID@32473 iut="3"]'), peer='192.0.2.1:514')


# exact bytes ---------------------------------------------------------------------------

def test_classic_0_7_record_is_the_original_line():
    assert render(record_07()) == '2026-10-25 02:30:01.250000 - web-1 - connection lost\nretrying\n'


def test_classic_matches_the_servers_cached_prefix_byte_for_byte():
    record = record_07(FALL_BACK + 0.5)
    assert render(record) == ReceiveClock().prefix(record.received) + 'web-1 - ' + record.body + '\n'


def test_rfc3339_0_7_record():
    assert render(record_07(), format='rfc3339') == \
        '2026-10-25T02:30:01.250000+02:00 web-1 app db.pool - connection lost\nretrying\n'
    assert render(record_07(), format='rfc3339', time='sent', timezone='utc', multiline='indent') == \
        '2026-10-25T00:30:00.675000Z web-1 app db.pool - connection lost\n  retrying\n'


def test_json_0_7_record():
    assert render(record_07(), format='json') == (
        '{"time":"2026-10-25T02:30:01.250000+02:00","received":"2026-10-25T02:30:01.250000+02:00",'
        '"sent":"2026-10-25T02:30:00.675000+02:00","host":"web-1","app":"app","module":"db.pool",'
        '"message":"connection lost\\nretrying","peer":"10.0.0.7:40000"}\n')


def test_1_2_record_with_exception_and_extra():
    record = record_12()
    assert render(record, multiline='indent') == (
        '2026-10-25 02:30:00.500000 - web-1 - query failed\n  Traceback (most recent call last):\n'
        '    File "x.py"\n  KeyError: 1\n')
    assert render(record, format='rfc3339', multiline='escape', time='sent') == (
        '2026-10-25T02:30:00.250000+02:00 web-1 app db.pool ERROR query failed\\nTraceback (most recent call '
        'last):\\n  File "x.py"\\nKeyError: 1\n')
    assert render(record, format='json', timezone='utc') == (
        '{"time":"2026-10-25T00:30:00.500000Z","received":"2026-10-25T00:30:00.500000Z",'
        '"sent":"2026-10-25T00:30:00.250000Z","host":"web-1","app":"app","module":"db.pool","level":"ERROR",'
        '"message":"query failed","exception":"Traceback (most recent call last):\\n  File \\"x.py\\"\\n'
        'KeyError: 1","extra":{"user":"ann","ids":[1,2]},"pid":4242,"thread":"worker-1","client_id":"c-1",'
        '"seq":7}\n')


def test_syslog_record():
    record = record_syslog()
    assert render(record) == '2026-10-25 02:30:00.000000 - mail.example - job done\n'
    assert render(record, format='rfc3339') == \
        '2026-10-25T02:30:00.000000+01:00 mail.example app cron NOTICE job done\n'
    assert render(record, format='json', time='sent') == (
        '{"time":"2026-10-25T02:29:59.000000+01:00","received":"2026-10-25T02:30:00.000000+01:00",'
        '"sent":"2026-10-25T02:29:59.000000+01:00","host":"mail.example","app":"app","module":"cron",'
        '"message":"job done","syslog":{"severity":5,"facility":9,"msgid":"JOB","procid":"811",'
        '"structured_data":"[exampleSDID@32473 iut=\\"3\\"]"},"peer":"192.0.2.1:514"}\n')


def test_controls_are_escaped_in_every_format():
    record = Record('app', 'm', 'evil\x1bhost\u202e', 'a\rfake\x1b]0;title\x07\u2028end\tok', FALL_BACK)
    assert render(record) == '2026-10-25 02:30:00.000000 - evil?host\\u202e - a\\x0dfake\\x1b]0;title\\x07\\u2028end\tok\n'
    assert render(record, format='rfc3339') == \
        '2026-10-25T02:30:00.000000+02:00 evil\\x1bhost\\u202e app m - a\\x0dfake\\x1b]0;title\\x07\\u2028end\tok\n'
    assert json.loads(render(record, format='json'))['message'] == record.body
    assert '\u2028' not in render(record, format='json')


def test_unusable_sent_time_falls_back_to_received():
    record = Record('app', 'm', 'h', 'b', FALL_BACK, sent=1e300)
    assert render(record, time='sent') == '2026-10-25 02:30:00.000000 - h - b\n'
    assert 'sent' not in json.loads(render(record, format='json'))
    assert loghog_record(dict(MESSAGE_07, stamp=10 ** 400), 'h', FALL_BACK).sent is None


# daylight saving time ---------------------------------------------------------------------

def test_fall_back_hour_is_ordered_and_unambiguous():
    """02:30 CEST and 02:30 CET, an hour apart, read the same only in the classic line."""
    first, second = (Record('app', 'm', 'h', 'b', FALL_BACK + offset) for offset in (0, 3600))
    assert render(first) == render(second)
    for options in ({'format': 'rfc3339'}, {'format': 'json'}):
        lines = [render(record, **options) for record in (first, second)]
        assert lines[0] != lines[1]
    stamps = [render(record, format='rfc3339').split(' ')[0] for record in (first, second)]
    assert stamps == ['2026-10-25T02:30:00.000000+02:00', '2026-10-25T02:30:00.000000+01:00']
    utc = [render(record, format='rfc3339', timezone='utc') for record in (first, second)]
    assert utc == sorted(utc) and utc[0] != utc[1]


# properties ---------------------------------------------------------------------------------

texts = st.text(st.characters(codec='utf-8'), max_size=60) | st.text('\n\r\t\x1b\x00\x85\u2028\u202e 2026-10-25 -', max_size=30)


@settings(max_examples=300, deadline=None)
@given(body=texts, host=texts, module=texts, level=st.none() | texts, exception=st.none() | texts,
       style=st.sampled_from(FORMATS), multiline=st.sampled_from(MULTILINES),
       received=st.floats(0, 4e9), sent=st.none() | st.floats(allow_nan=False))
def test_no_line_holds_a_raw_control_and_continuations_never_start_a_record(
        body, host, module, level, exception, style, multiline, received, sent):
    record = Record('app', module, host, body, received, sent=sent, level=level, exception=exception)
    text = render(record, format=style, multiline=multiline, time='sent')
    assert text.endswith('\n')
    assert not UNSAFE.search(text)
    lines = text[:-1].split('\n')
    if style == 'json':
        assert len(lines) == 1
        assert json.loads(text)['message'] == body
        return
    assert RECORD_START.match(lines[0])
    if multiline == 'escape':
        assert len(lines) == 1
    elif multiline == 'indent':
        assert not any(RECORD_START.match(line) for line in lines[1:])


@settings(max_examples=200, deadline=None)
@given(body=st.text(st.characters(codec='utf-8')), host=st.text(max_size=300), received=st.floats(1e9, 4e9))
def test_classic_formatter_agrees_with_the_fast_path(body, host, received):
    """The processor's classic path (cached prefix) and the Formatter write the same line."""
    received = round(received, 3)
    fast = ReceiveClock().prefix(received) + classic_host(host) + ' - ' + escape_controls(body) + '\n'
    assert render(Record('app', 'm', host, body, received)) == fast


# configuration ---------------------------------------------------------------------------------

def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_options_are_inherited_from_the_root_and_the_defaults(tmp_path):
    defaults = LineFormat(timezone='utc')
    facilities = load_facilities(write(tmp_path, 'facilities.conf', """
[app]
rotate = daily
backup_count = 3
format = rfc3339
[app:db]
rotate = daily
backup_count = 3
multiline = indent
[other]
rotate = daily
backup_count = 3
"""), defaults)
    assert facilities.lookup('app', 'db.x').line_format == LineFormat('rfc3339', 'utc', 'received', 'indent')
    assert facilities.lookup('app', 'web').line_format == LineFormat('rfc3339', 'utc')
    assert facilities.lookup('other', 'root').line_format == defaults


def test_a_bad_option_names_file_section_and_key(tmp_path):
    path = write(tmp_path, 'facilities.conf', '[app]\nrotate = daily\nbackup_count = 3\nformat = xml\n')
    with pytest.raises(ConfigError, match=r"facilities.conf, line 4, \[app\] format: format 'xml' is not one of"):
        load_facilities(path)


def test_format_changes_name_the_facility():
    old = {'app:root': LineFormat(), 'app:db': LineFormat()}
    new = {'app:root': LineFormat(format='json'), 'app:db': LineFormat(), 'new:root': LineFormat()}
    assert format_changes(old, new) == (
        'app:root: line format format = json, timezone = local, time = received, multiline = raw '
        '(was format = classic, timezone = local, time = received, multiline = raw); new lines only',)
