"""Backup names across the Europe/Berlin fall-back: distinct, sorted in time order, old names kept."""

import calendar
from datetime import datetime

import pytest
from dateutil import tz

from loghogd.names import backup_stamp, parse_backup, stamp_time, stamps_in_time_order
from tests.test_rotation import Setup, backup_names

FALL_BACK = calendar.timegm((2026, 10, 25, 1, 0, 0))
"""03:00 CEST becomes 02:00 CET: the hour 02:00-03:00 happens twice."""


pytestmark = pytest.mark.usefixtures('berlin_time')


def test_stamps_across_the_fall_back_are_distinct_and_sort_in_time_order():
    times = [FALL_BACK + minutes * 60 for minutes in range(-120, 121, 20)]
    stamps = [backup_stamp(datetime.fromtimestamp(when, tz.tzlocal())) for when in times]
    assert len(set(stamps)) == len(stamps)
    assert sorted(stamps) == stamps
    assert [stamp_time(stamp) for stamp in stamps] == times
    assert stamps[6] == '2026-10-25-01-00-00-000000Z'


def test_old_local_stamps_are_still_recognised_and_ordered_by_time():
    old = datetime.fromtimestamp(FALL_BACK - 7200, tz.tzlocal()).strftime('%Y-%m-%d-%H-%M-%S-%f')
    new = [backup_stamp(datetime.fromtimestamp(FALL_BACK + offset, tz.tzlocal())) for offset in (-3600, 0)]
    assert old == '2026-10-25-01-00-00-000000'
    assert parse_backup('root.log.' + old + '.xz').stamp == old
    assert parse_backup('root.log.' + new[0] + '.xz.tmp').temporary
    assert stamps_in_time_order([new[1], old, new[0]]) == [old, new[0], new[1]]
    assert sorted([new[1], old, new[0]]) != [old, new[0], new[1]], 'as text the old stamp sorts last'


def test_rotations_in_the_repeated_hour_keep_names_and_retention_in_time_order(tmp_path):
    """SIGUSR2 at 02:10 CEST, 02:40 CEST, 02:10 CET, 02:40 CET: local names would repeat and misorder."""
    times = [FALL_BACK + minutes * 60 for minutes in (-50, -20, 10, 40, 55)]
    setup = Setup(tmp_path, times[0], '[app]\nrotate = daily\nbackup_count = 3\n')
    for number, when in enumerate(times[1:]):
        setup.write('root', 'line %d' % number)
        setup.clock.now = when
        setup.rotator.rotate_all(when)
    setup.settle()
    stamps = [parse_backup(name).stamp for name in backup_names(setup.path('root'))]
    assert [stamp_time(stamp) for stamp in stamps] == times[1:4]
    assert [line for lines in setup.lines('root') for line in lines] == ['line 1', 'line 2', 'line 3']
    local = [datetime.fromtimestamp(stamp_time(stamp), tz.tzlocal()).strftime('%H:%M %Z') for stamp in stamps]
    assert local == ['02:40 CEST', '02:10 CET', '02:40 CET']
