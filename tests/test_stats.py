"""Counters as --status, SIGUSR1 and Prometheus show them; atomic file replacement."""

import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loghogd.atomicfile import replace_file
from loghogd.stats import Counters, prometheus_label_value, prometheus_text
from loghogd.status import format_status, write_json_atomically

SAMPLE = re.compile(r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>[0-9.e+-]+)', re.S)
LABEL = re.compile(r'(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"(?:,|\Z)')


def unescape_label(text: str) -> str:
    return re.sub(r'\\([\\"n])', lambda match: '\n' if match.group(1) == 'n' else match.group(1), text)


def parse_prometheus(text: str) -> dict:
    """{(name, ((label, value), ...)): value}, checking that every sample's metric was typed first."""
    samples, typed = {}, set()
    assert text.endswith('\n')
    for line in text[:-1].split('\n'):
        if line.startswith('# TYPE '):
            typed.add(line.split()[2])
            continue
        if line.startswith('# HELP '):
            continue
        match = SAMPLE.fullmatch(line)
        assert match, line
        assert match.group('name') in typed, 'no # TYPE before %s' % line
        labels_text = match.group('labels') or ''
        labels = tuple((label.group('name'), unescape_label(label.group('value')))
                       for label in LABEL.finditer(labels_text))
        assert ''.join(label.group(0) for label in LABEL.finditer(labels_text)) == labels_text, line
        samples[(match.group('name'), labels)] = float(match.group('value'))
    return samples


def busy_counters() -> Counters:
    counters = Counters()
    counters.accepted_by_facility.update({'shop:root': 7, 'shop:web': 3, 'cron:root': 2})
    counters.reject('bad_signature', 'shop')
    counters.reject('bad_signature', 'shop')
    counters.reject('unknown_app')
    counters.bytes_received = 123456
    counters.frames_received = 15
    counters.connections_accepted = 4
    counters.connections_open = 1
    counters.tls_failures = 2
    counters.rotations = 5
    counters.compressions = 4
    return counters


def test_prometheus_text_holds_every_counter_with_its_labels():
    samples = parse_prometheus(prometheus_text(busy_counters().snapshot()))
    assert samples[('loghogd_messages_accepted_total', (('app', 'shop'), ('facility', 'shop:web')))] == 3
    assert samples[('loghogd_messages_accepted_total', (('app', 'cron'), ('facility', 'cron:root')))] == 2
    assert samples[('loghogd_messages_rejected_total', (('reason', 'bad_signature'),))] == 2
    assert samples[('loghogd_messages_rejected_total', (('reason', 'unknown_app'),))] == 1
    assert samples[('loghogd_messages_rejected_by_app_total', (('app', 'shop'),))] == 2
    assert samples[('loghogd_received_bytes_total', ())] == 123456
    assert samples[('loghogd_connections_open', ())] == 1
    assert samples[('loghogd_tls_handshake_failures_total', ())] == 2
    assert samples[('loghogd_rotations_total', ())] == 5
    assert samples[('loghogd_compressions_total', ())] == 4
    assert samples[('loghogd_start_time_seconds', ())] > 0
    assert all(name.startswith('loghogd_') for name, _labels in samples)


def test_prometheus_types_counters_and_gauges():
    text = prometheus_text(busy_counters().snapshot())
    assert '# TYPE loghogd_received_bytes_total counter\n' in text
    assert '# TYPE loghogd_connections_open gauge\n' in text
    assert text.count('# TYPE loghogd_messages_accepted_total ') == 1
    assert text.endswith('\n')


def test_a_counter_without_a_description_still_appears_untyped():
    snapshot = busy_counters().snapshot()
    snapshot['brand_new_counter'] = 9
    snapshot['some_mapping'] = {'a': 1}
    text = prometheus_text(snapshot)
    assert '# TYPE loghogd_brand_new_counter untyped\nloghogd_brand_new_counter 9\n' in text
    assert 'some_mapping' not in text
    assert 'loghogd_pid ' not in text and 'uptime' not in text


@given(st.text())
def test_any_label_value_is_escaped_and_parses_back(value):
    escaped = prometheus_label_value(value)
    assert '\n' not in escaped
    assert re.fullmatch(r'(?:[^"\\\n]|\\[\\"n])*', escaped)
    assert unescape_label(escaped) == value


@given(st.dictionaries(st.text(min_size=1), st.integers(min_value=0, max_value=10 ** 12), max_size=5))
def test_hostile_reasons_make_parseable_samples(reasons):
    counters = Counters()
    counters.rejected_by_reason.update(reasons)
    samples = parse_prometheus(prometheus_text(counters.snapshot()))
    got = {labels[0][1]: value for (name, labels), value in samples.items()
           if name == 'loghogd_messages_rejected_total'}
    assert got == reasons


def status_number(text: str, label: str, indent: int = 0) -> int:
    match = re.search(r'^%s%s +(\d+)$' % (' ' * indent, re.escape(label)), text, re.M)
    assert match, '%r not in:\n%s' % (label, text)
    return int(match.group(1))


def test_status_text_shows_totals_and_breakdowns():
    text = format_status(busy_counters().snapshot())
    first = text.splitlines()[0]
    assert first.startswith('loghogd ') and 'PID %d' % os.getpid() in first and ' up 0m 0' in first
    assert status_number(text, 'messages accepted') == 12
    assert status_number(text, 'shop:web', indent=4) == 3
    assert status_number(text, 'cron', indent=4) == 2
    assert status_number(text, 'messages rejected') == 3
    assert status_number(text, 'bad_signature', indent=4) == 2
    assert status_number(text, 'bytes received') == 123456
    assert status_number(text, 'TLS handshake failures') == 2
    assert status_number(text, 'rotations') == 5
    assert text.index('by reason') < text.index('bad_signature') < text.index('bytes received')


def test_status_text_shows_a_counter_it_has_no_label_for():
    snapshot = busy_counters().snapshot()
    snapshot['brand_new_counter'] = 9
    assert status_number(format_status(snapshot), 'brand new counter') == 9


def test_status_text_lists_the_high_water_mark_of_each_acknowledging_client():
    snapshot = busy_counters().snapshot()
    snapshot.update(ack_clients=2, ack_clients_by_app={'shop': 2}, ack_high_water={'web1-4242': 5120, 'cron-7': 3})
    text = format_status(snapshot)
    assert status_number(text, 'acknowledged-delivery clients') == 2
    assert status_number(text, 'web1-4242', indent=4) == 5120
    assert text.index('highest seq handled, by client id') < text.index('cron-7')
    assert 'acknowledged-delivery' not in format_status(busy_counters().snapshot())


def test_status_text_says_when_it_shows_only_the_most_recent_clients():
    snapshot = busy_counters().snapshot()
    snapshot.update(ack_clients=100000, ack_clients_by_app={'fleet': 99998, 'cron': 2},
                    ack_high_water={'client-%d' % number: number for number in range(20)})
    text = format_status(snapshot)
    assert status_number(text, 'acknowledged-delivery clients') == 100000
    assert status_number(text, 'fleet', indent=4) == 99998
    assert 'highest seq handled, the 20 most recently seen' in text
    assert len(text.splitlines()) < 80


def test_status_text_neutralises_control_characters_in_names():
    counters = Counters()
    counters.reject('odd\nreason')
    text = format_status(counters.snapshot())
    assert 'odd\nreason' not in text
    assert status_number(text, 'odd\\nreason', indent=4) == 1


def test_snapshot_sums_by_app_and_is_exact():
    snapshot = busy_counters().snapshot()
    assert snapshot['accepted'] == 12
    assert snapshot['accepted_by_app'] == {'shop': 10, 'cron': 2}
    assert snapshot['rejected'] == 3
    assert snapshot['pid'] == os.getpid() and snapshot['time'] >= snapshot['started']


def test_replace_file_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'loghogd.prom'
    replace_file(str(path), b'first\n')
    replace_file(str(path), b'second\n', durable=True, mode=0o644)
    assert path.read_text() == 'second\n'
    assert os.listdir(tmp_path) == ['loghogd.prom']
    assert os.stat(path).st_mode & 0o777 == 0o644
    write_json_atomically(str(tmp_path / 'stats.json'), {'b': 1, 'a': 2})
    assert (tmp_path / 'stats.json').read_text() == '{\n "a": 2,\n "b": 1\n}\n'


def test_replace_file_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'loghogd.prom'
    path.write_text('old\n')
    (tmp_path / 'blocked').mkdir()
    with pytest.raises(OSError):
        replace_file(str(tmp_path / 'blocked'), b'new\n')
    assert path.read_text() == 'old\n'
    assert sorted(os.listdir(tmp_path)) == ['blocked', 'loghogd.prom']
