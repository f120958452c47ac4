"""File names: a per-host file is never a facility's file, and every name parses back to its parts."""

from datetime import datetime, timedelta

from dateutil import tz
from hypothesis import given
from hypothesis import strategies as st

from loghogd.facilities import NAME_PART
from loghogd.names import (backup_stamp, free_backup_path, log_file_name, parse_backup, split_host_file,
                           stamp_time)
from loghogd.writer import safe_hostname

module_parts = st.from_regex(NAME_PART, fullmatch=True).filter(lambda part: part not in ('.', '..'))
modules = st.lists(module_parts, min_size=1, max_size=4).map('.'.join)
hosts = st.text(max_size=80).map(safe_hostname)
stamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))


@given(modules, hosts, modules)
def test_a_per_host_file_name_is_never_a_facility_file_name(module, host, other_module):
    assert log_file_name(module, host) != log_file_name(other_module)
    assert split_host_file(log_file_name(other_module)) is None


@given(hosts, modules)
def test_a_per_host_file_name_parses_back_to_its_host_and_module(host, module):
    assert split_host_file(log_file_name(module, host)) == (host, module)


@given(modules, st.one_of(st.none(), hosts), stamps, st.sampled_from(['', '.xz', '.gz', '.bz2']), st.booleans())
def test_a_backup_name_parses_back_to_its_live_file_stamp_and_archive(module, host, when, extension, temporary):
    live = log_file_name(module, host)
    name = '%s.%s%s%s' % (live, backup_stamp(when), extension, '.tmp' if temporary and extension else '')
    backup = parse_backup(name)
    assert backup.live == live and backup.extension == extension
    assert backup.temporary == bool(temporary and extension)
    assert backup.stamp == backup_stamp(when)
    assert stamp_time(backup.stamp) == when.timestamp()


@given(st.text(max_size=60))
def test_parse_backup_takes_any_text_and_only_backup_names(name):
    backup = parse_backup(name)
    assert backup is None or name.startswith(backup.live + '.' + backup.stamp)


def test_a_taken_backup_name_moves_on_by_a_microsecond():
    start = datetime(2026, 1, 5, 0, 0, tzinfo=tz.UTC)
    taken = {'/log/a/root.log.2026-01-05-00-00-00-000000Z', '/log/a/root.log.2026-01-05-00-00-00-000001Z.xz'}
    stamp, path = free_backup_path('/log/a/root.log', start, taken.__contains__)
    assert (stamp, path) == (backup_stamp(start + timedelta(microseconds=2)),
                             '/log/a/root.log.2026-01-05-00-00-00-000002Z')
