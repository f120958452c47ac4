"""Rotation schedules against fixed clocks, sizes, ages and the rotation state."""

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from dateutil import tz
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.schedule import RotationState, parse_age, parse_rotate, parse_size, seconds_until

BERLIN = tz.gettz('Europe/Berlin')
UTC = timezone.utc


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)


def due_times(spec: str, start: datetime, count: int) -> list:
    schedule = parse_rotate(spec)
    times = []
    for _ in range(count):
        start = schedule.next_due(start)
        times.append(start)
    return times


def iso(times: list) -> list:
    return [when.isoformat() for when in times]


@pytest.mark.parametrize('spec, start, expected', [
    ('hourly', berlin(2026, 1, 5, 10, 0), '2026-01-05T11:00:00+01:00'),
    ('hourly', berlin(2026, 1, 5, 10, 59, 59), '2026-01-05T11:00:00+01:00'),
    ('daily', berlin(2026, 1, 5, 10, 0), '2026-01-06T00:00:00+01:00'),
    ('midnight', berlin(2026, 1, 5, 0, 0), '2026-01-06T00:00:00+01:00'),
    ('weekly', berlin(2026, 1, 4, 23, 59), '2026-01-05T00:00:00+01:00'),  # Sunday -> Monday
    ('weekly', berlin(2026, 1, 5, 0, 0), '2026-01-12T00:00:00+01:00'),  # due on Monday itself: next week
    ('monthly', berlin(2026, 1, 31, 12, 0), '2026-02-01T00:00:00+01:00'),
    ('monthly', berlin(2026, 12, 15, 12, 0), '2027-01-01T00:00:00+01:00'),
    ('yearly', berlin(2026, 6, 1), '2027-01-01T00:00:00+01:00'),
    ('annually', berlin(2026, 12, 31, 23, 59), '2027-01-01T00:00:00+01:00'),
    ('55 22 * * *', berlin(2026, 1, 5, 22, 55), '2026-01-06T22:55:00+01:00'),
    ('33 12 * * 1-5', berlin(2026, 1, 9, 13, 0), '2026-01-12T12:33:00+01:00'),  # Friday -> Monday
    ('*/15 * * * *', berlin(2026, 1, 5, 10, 7, 30), '2026-01-05T10:15:00+01:00'),
    ('0 0 29 feb *', berlin(2026, 1, 1), '2028-02-29T00:00:00+01:00'),
])
def test_next_due_is_first_time_strictly_after(spec: str, start: datetime, expected: str) -> None:
    assert parse_rotate(spec).next_due(start).isoformat() == expected


def test_names_are_case_insensitive_and_normalized() -> None:
    assert parse_rotate('Midnight') == parse_rotate('DAILY') == parse_rotate(' daily ')
    assert parse_rotate('Annually').spec == 'yearly'
    assert parse_rotate('0 0 * JAN Mon') == parse_rotate('0  0 * jan mon')
    assert hash(parse_rotate('hourly')) == hash(parse_rotate('HOURLY'))


def test_size_only_has_no_due_time() -> None:
    schedule = parse_rotate('Size')
    assert schedule.size_only
    assert schedule.next_due(berlin(2026, 1, 1)) is None
    assert not parse_rotate('daily').size_only


def test_hourly_across_spring_forward_skips_the_missing_hour() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST.
    times = due_times('hourly', berlin(2026, 3, 29, 0, 30), 4)
    assert iso(times) == ['2026-03-29T01:00:00+01:00', '2026-03-29T03:00:00+02:00',
                          '2026-03-29T04:00:00+02:00', '2026-03-29T05:00:00+02:00']


def test_time_in_the_spring_gap_is_due_when_the_clock_jumps_over_it() -> None:
    times = due_times('30 2 * * *', berlin(2026, 3, 28, 3, 0), 3)
    assert iso(times) == ['2026-03-29T03:30:00+02:00', '2026-03-30T02:30:00+02:00',
                          '2026-03-31T02:30:00+02:00']


def test_daily_in_a_zone_that_skips_midnight_fires_when_the_day_starts() -> None:
    santiago = tz.gettz('America/Santiago')  # 2026-09-06 00:00 jumps to 01:00
    times = due_times('daily', datetime(2026, 9, 5, 12, tzinfo=santiago), 2)
    assert iso(times) == ['2026-09-06T01:00:00-03:00', '2026-09-07T00:00:00-03:00']


def test_repeated_wall_time_in_autumn_is_due_once() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST goes back to 02:00 CET.
    times = due_times('30 2 * * *', berlin(2026, 10, 24, 3, 0), 3)
    assert iso(times) == ['2026-10-25T02:30:00+02:00', '2026-10-26T02:30:00+01:00',
                          '2026-10-27T02:30:00+01:00']


def test_after_a_rotation_in_the_repeated_hour_the_second_pass_continues() -> None:
    second_pass = berlin(2026, 10, 25, 2, 10, fold=1)
    assert second_pass.utcoffset() == timedelta(hours=1)
    due = parse_rotate('*/15 * * * *').next_due(second_pass)
    assert due.isoformat() == '2026-10-25T02:15:00+01:00'
    assert seconds_until(due, second_pass) == 300


def test_daily_across_both_changes_is_always_local_midnight() -> None:
    for start in (berlin(2026, 3, 27, 12), berlin(2026, 10, 23, 12)):
        times = due_times('daily', start, 4)
        assert all((when.hour, when.minute) == (0, 0) for when in times)
        assert sorted(times) == times and len({when.timestamp() for when in times}) == 4


def test_cron_intervals_across_autumn_skip_only_the_repeated_hour() -> None:
    times = due_times('*/20 * * * *', berlin(2026, 10, 25, 0, 0), 15)
    gaps = [int(later.timestamp() - earlier.timestamp()) // 60 for earlier, later in zip(times, times[1:])]
    assert sorted(set(gaps)) == [20, 80]
    assert gaps.count(80) == 1


def test_zone_of_the_given_datetime_is_used_and_zone_argument_overrides() -> None:
    start = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
    assert parse_rotate('daily').next_due(start).isoformat() == '2026-01-06T00:00:00+00:00'
    in_berlin = parse_rotate('daily').next_due(start, zone=BERLIN)
    assert in_berlin.isoformat() == '2026-01-06T00:00:00+01:00'
    assert seconds_until(in_berlin, start) == 3600


def test_naive_datetime_is_local_time() -> None:
    due = parse_rotate('hourly').next_due(datetime(2026, 1, 5, 10, 30))
    assert due.tzinfo is not None
    assert (due.minute, due.second) == (0, 0)


@pytest.mark.parametrize('value, reason', [
    ('', 'empty'),
    ('@reboot', '@-forms'),
    ('@daily', '@-forms'),
    ('*/15 * * *', 'exactly 5 fields'),
    ('0 0 * * * *', 'exactly 5 fields'),
    ('60 * * * *', 'out of range'),
    ('1-70 * * * *', 'out of range'),
    ('0 24 * * *', 'out of range'),
    ('0 0 0 * *', 'out of range'),
    ('0 0 * 13 *', 'out of range'),
    ('0 0 * * 8', 'out of range'),
    ('30-10 * * * *', 'reversed'),
    ('*/0 * * * *', 'step'),
    ('H * * * *', 'not a number'),
    ('0 0 L * *', 'not a number'),
    ('0 0 * foo *', 'not a month name'),
    ('0 0 31 2 *', 'not a valid cron expression'),
    ('fortnightly', 'unknown schedule name, use annually'),
    ('dayly', 'unknown schedule name, did you mean daily'),
    ('Hourlly', 'did you mean hourly'),
    ('0 0 1', 'exactly 5 fields'),
])
def test_rejected_rotation_values_say_why(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_rotate(value)


CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


@st.composite
def cron_field(draw: st.DrawFn, low: int, high: int, valid: bool) -> str:
    """A list of numbers, ranges and steps, all in [low, high] unless not valid."""
    def number() -> int:
        return draw(st.integers(low, high))
    items = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(['number', 'range', 'star-step', 'range-step']))
        first, second = sorted((number(), number()))
        step = draw(st.integers(1, 30))
        items.append({'number': str(first), 'range': '%d-%d' % (first, second),
                      'star-step': '*/%d' % step, 'range-step': '%d-%d/%d' % (first, second, step)}[kind])
    if not valid:
        bad = draw(st.one_of(st.integers(high + 1, high + 100), st.integers(max(0, low - 5), low - 1)
                             if low > 0 else st.integers(high + 1, 999)))
        items.insert(draw(st.integers(0, len(items))), str(bad))
    return ','.join(items)


@given(st.data())
@settings(max_examples=200)
def test_generated_cron_in_range_is_accepted_and_due_after_start(data: st.DataObject) -> None:
    fields = [data.draw(cron_field(low, high, True)) for low, high in CRON_FIELDS]
    # A day that no month has (31 in a 30-day month only) may never come: keep days <= 28.
    fields[2] = data.draw(cron_field(1, 28, True))
    schedule = parse_rotate(' '.join(fields))
    start = berlin(2026, 3, 29, 1, 7)
    due = schedule.next_due(start)
    assert due.timestamp() > start.timestamp()


@given(st.data())
@settings(max_examples=200)
def test_generated_cron_out_of_range_is_rejected(data: st.DataObject) -> None:
    fields = [data.draw(cron_field(low, high, True)) for low, high in CRON_FIELDS]
    broken = data.draw(st.integers(0, 4))
    fields[broken] = data.draw(cron_field(*CRON_FIELDS[broken], False))
    with pytest.raises(ValueError, match='out of range'):
        parse_rotate(' '.join(fields))


@given(st.lists(st.sampled_from(['*', '5', '1-3', '*/2']), min_size=0, max_size=9).filter(lambda f: len(f) != 5))
def test_generated_cron_with_wrong_field_count_is_rejected(fields: list) -> None:
    with pytest.raises(ValueError):
        parse_rotate(' '.join(fields))


@given(st.text(max_size=40))
@settings(max_examples=300)
def test_any_text_is_a_schedule_or_a_value_error(text: str) -> None:
    try:
        schedule = parse_rotate(text)
    except ValueError:
        return
    assert parse_rotate(schedule.spec) == schedule


@pytest.mark.parametrize('value, size', [
    ('1', 1), ('1048576', 1048576), ('512K', 512 * 1024), ('10m', 10 * 1024 ** 2), ('2G', 2 * 1024 ** 3),
    (' 7 k ', 7 * 1024),
])
def test_parse_size(value: str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize('value', ['', '0', '-1', '1.5M', '10MB', '10T', 'ten', '١٢'])
def test_parse_size_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize('value, seconds', [
    ('90s', 90), ('90m', 5400), ('12h', 43200), ('30d', 30 * 86400), ('2W', 14 * 86400),
])
def test_parse_age(value: str, seconds: float) -> None:
    assert parse_age(value) == seconds


@pytest.mark.parametrize('value', ['', '30', '0d', 'd', '1.5d', '-3d', '3y'])
def test_parse_age_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_age(value)


def test_rotation_state_round_trips_through_its_file(tmp_path) -> None:
    path = str(tmp_path / 'rotation-state.json')
    state = RotationState.load(path)
    assert state.warning is None and state.last_rotation('/logs/a/root.log') is None
    when = berlin(2026, 10, 25, 2, 30, fold=1)
    state.record('/logs/a/root.log', when)
    state.record('/logs/a/web.log', datetime(2026, 1, 1, tzinfo=UTC))
    state.save()
    loaded = RotationState.load(path)
    assert loaded.warning is None
    assert loaded.last_rotation('/logs/a/root.log').timestamp() == when.timestamp()
    assert loaded.last_rotation('/logs/a/web.log').timestamp() == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert loaded.last_rotation('/logs/a/other.log') is None
    assert os.listdir(str(tmp_path)) == ['rotation-state.json']


def test_rotation_state_replaces_the_file_atomically(tmp_path) -> None:
    path = tmp_path / 'rotation-state.json'
    state = RotationState.load(str(path))
    state.record('/logs/a/root.log', berlin(2026, 1, 1))
    state.save()
    inode = path.stat().st_ino
    state.record('/logs/a/root.log', berlin(2026, 1, 2))
    state.save()
    assert path.stat().st_ino != inode
    assert json.loads(path.read_text())['version'] == 1


@pytest.mark.parametrize('content', ['{not json', '[]', '{"version": 99}', '{"version": 1}',
                                     '{"version": 1, "last_rotation": {"/a": "yesterday"}}',
                                     '{"version": 1, "last_rotation": {"/a": "2026-01-01T00:00:00"}}'])
def test_unusable_rotation_state_starts_empty_with_a_warning(tmp_path, content: str) -> None:
    path = tmp_path / 'rotation-state.json'
    path.write_text(content)
    state = RotationState.load(str(path))
    assert state.last_rotation('/a') is None
    assert state.warning is not None and str(path) in state.warning
