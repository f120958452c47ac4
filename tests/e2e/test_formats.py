"""Line formats as an operator meets them: a real loghogd writing json, rfc3339 and safe classic lines."""

import json
import re
import signal
import socket

from tests.support.daemon import Loghogd, facilities_conf, frame, wait_for

HOSTILE = ['plain', 'two\nlines', 'fake\r2026-01-01 00:00:00.000000 - root - forged', 'title\x1b]0;pwned\x07',
           'bidi \u202egnp.exe', 'sep\u2028arator', 'del\x7f c1\x85', 'tab\tkept', 'ünïcödé "quoted" \\ back']


def read_internal_log(daemon: Loghogd) -> str:
    with open(daemon.internal_log, encoding='utf-8') as stream:
        return stream.read()


def file_bytes(daemon: Loghogd, relative: str) -> bytes:
    try:
        with open(daemon.path(relative), 'rb') as stream:
            return stream.read()
    except FileNotFoundError:
        return b''


def test_json_lines_read_back_with_json_loads(tmp_path):
    conf = facilities_conf({'app': {'format': 'json'}})
    with Loghogd(tmp_path, conf) as daemon:
        for body in HOSTILE:
            daemon.send_tcp(frame('app', 'db.pool', body, hostname='web\x1b-1'))
        daemon.send_udp(frame('app', 'root', 'over udp'))
        lines = daemon.wait_for_lines('app/root.log', len(HOSTILE) + 1)
    records = [json.loads(line) for line in lines]
    assert sorted(record['message'] for record in records) == sorted(HOSTILE + ['over udp'])
    tcp = [record for record in records if record['message'] != 'over udp']
    assert {(record['app'], record['module'], record['host']) for record in tcp} == {('app', 'db.pool', 'web\x1b-1')}
    assert all(record['peer'].startswith('127.0.0.1:') and 'sent' in record for record in records)
    assert all(re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d', record['time'])
               for record in records)


def test_default_classic_line_escapes_controls_so_no_line_is_forged(tmp_path):
    with Loghogd(tmp_path, facilities_conf({'app': {}})) as daemon:
        for body in HOSTILE:
            daemon.send_tcp(frame('app', 'root', body))
        daemon.send_tcp(frame('app', 'root', 'last'))
        wait_for(lambda: b'last\n' in file_bytes(daemon, 'app/root.log'), what='the last line')
    data = file_bytes(daemon, 'app/root.log')
    assert re.findall(rb'[\x00-\x08\x0b-\x1f\x7f]', data) == []
    text = data.decode('utf-8')
    assert '\u202e' not in text and '\u2028' not in text and '\x85' not in text
    assert 'fake\\x0d2026-01-01' in text and 'title\\x1b]0;pwned\\x07' in text and 'tab\tkept' in text
    assert text.count('\n') == len(HOSTILE) + 2


def test_defaults_from_loghogd_conf_and_indent(tmp_path):
    config = {'format': {'format': 'rfc3339', 'timezone': 'utc', 'multiline': 'indent'}}
    with Loghogd(tmp_path, facilities_conf({'app': {}}), config=config) as daemon:
        daemon.send_tcp(frame('app', 'web', 'GET /\n2026-01-01T00:00:00Z forged', hostname='h1'))
        lines = daemon.wait_for_lines('app/root.log', 2)
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z h1 app web - GET /\n', lines[0])
    assert lines[1] == '  2026-01-01T00:00:00Z forged\n'


def test_reload_changes_the_format_for_new_lines_and_logs_it(tmp_path):
    with Loghogd(tmp_path, facilities_conf({'app': {}})) as daemon:
        daemon.send_tcp(frame('app', 'root', 'before'))
        daemon.wait_for_lines('app/root.log', 1)
        daemon.write_facilities(facilities_conf({'app': {'format': 'json'}}))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: 'app:root: line format format = json' in read_internal_log(daemon), what='the change logged')
        daemon.send_tcp(frame('app', 'root', 'after'))
        lines = daemon.wait_for_lines('app/root.log', 2)
    assert lines[0].endswith(' - testhost - before\n')
    assert json.loads(lines[1])['message'] == 'after'
    assert 'new lines only' in read_internal_log(daemon)


def test_syslog_records_keep_their_fields_in_json(tmp_path):
    config = {'server': {'listen_ipv4_syslog': '127.0.0.1:0'}}
    with Loghogd(tmp_path, facilities_conf({'app': {'format': 'json', 'timezone': 'utc'}}),
                 config=config) as daemon:
        with socket.create_connection(('127.0.0.1', daemon.ports['syslog-tcp'])) as sock:
            sock.sendall(b'<13>1 2026-10-25T02:30:00.5+01:00 web1 app 811 ID47 [a@1 b="c"] one\x1b[2J\n')
        [line] = daemon.wait_for_lines('app/root.log', 1)
    record = json.loads(line)
    assert record['message'] == 'one\x1b[2J' and '\x1b' not in line
    assert record['sent'] == '2026-10-25T01:30:00.500000Z' and record['host'] == 'web1'
    assert record['syslog'] == {'severity': 5, 'facility': 1, 'msgid': 'ID47', 'procid': '811',
                                'structured_data': '[a@1 b="c"]'}
