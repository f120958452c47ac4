"""The Rotator and the Compressor in-process: real files and real compressor children, a fixed clock."""

import lzma
import os
import stat
import time
from datetime import datetime

from dateutil import tz

from loghogd.backups import list_directories
from loghogd.compressor import Compressor, recover
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.names import backup_stamp, parse_backup
from loghogd.rotation import Rotator
from loghogd.schedule import RotationState
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.writer import Writer

FACILITIES = """
[app]
rotate = daily
backup_count = 5
max_size = 1000

[app:web]
rotate = daily
backup_count = 2

[app:web.requests]
rotate = daily
backup_count = 2
"""


def local(*args: int) -> float:
    return datetime(*args, tzinfo=tz.tzlocal()).timestamp()


def stamp_at(*args: int) -> str:
    """The backup stamp of a period that began at this local time."""
    return backup_stamp(datetime(*args, tzinfo=tz.tzlocal()))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Setup:
    """A writer and a rotator over a temporary log directory, on a fixed clock."""

    def __init__(self, tmp_path, now: float, facilities: str = FACILITIES) -> None:
        (tmp_path / 'facilities.conf').write_text(facilities)
        (tmp_path / 'loghogd.conf').write_text(
            '[main]\nworkdir = lib\nlogdir = log\nrundir = run\n[log]\nfilename =\n'
            '[compressor]\nformat = xz\nlevel = 0\n')
        self.config = load_config(str(tmp_path / 'loghogd.conf'))
        os.makedirs(self.config.main.workdir, exist_ok=True)
        self.facilities = load_facilities(str(tmp_path / 'facilities.conf'))
        self.counters = Counters()
        self.writer = Writer(self.config.main.logdir, self.counters, RateLimitedReporter())
        self.clock = Clock(now)
        self.rotator = Rotator(self.config, self.facilities, self.writer, self.counters, self.clock)
        self.rotator.start(now)

    def write(self, module: str, *bodies: str) -> None:
        logfile = self.writer.file_for(self.facilities.lookup('app', module), 'host')
        logfile.pending.extend(body + '\n' for body in bodies)
        self.writer.flush_file(logfile)

    def path(self, module: str) -> str:
        return os.path.join(self.config.main.logdir, 'app', module + '.log')

    def backups(self, module: str) -> list:
        return backup_names(self.path(module))

    def settle(self) -> None:
        deadline = time.monotonic() + 20
        while not self.rotator.compressor.idle:
            assert time.monotonic() < deadline, 'compressors still running'
            time.sleep(0.02)
            self.rotator.reap()

    def lines(self, module: str) -> list:
        """Lines of the backups, oldest first, then of the live file."""
        directory = os.path.dirname(self.path(module))
        found = []
        for name in self.backups(module) + [module + '.log']:
            opener = lzma.open if name.endswith('.xz') else open
            with opener(os.path.join(directory, name), 'rt') as stream:
                found.append(stream.read().splitlines())
        return found


def backup_names(path: str) -> list:
    """The finished backups of the log file `path`, by name."""
    def of_path(name):
        backup = parse_backup(name)
        return backup is not None and backup.live == os.path.basename(path) and not backup.temporary
    return sorted(name for name in os.listdir(os.path.dirname(path)) if of_path(name))


def test_backup_names_of_a_file_never_match_a_longer_name():
    assert parse_backup('web.log.2026-01-01-00-00-00-000000').live == 'web.log'
    assert parse_backup('web.log.2026-01-01-00-00-00-000000.bz2').extension == '.bz2'
    assert parse_backup('web.log.2026-01-01-00-00-00-000000.xz.tmp').temporary
    assert parse_backup('web.requests.log.2026-01-01-00-00-00-000000').live == 'web.requests.log'
    for name in ('web.log.old', 'web.log.2026-01-01-00-00-00-00000', 'web.log.2026-01-01-00-00-00-000000.zip',
                 'web.log.2026-01-01-00-00-00-000000.tmp'):
        assert parse_backup(name) is None, name


def test_scheduled_rotation_names_the_backup_after_the_previous_rotation(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0, 0))
    setup.write('web', 'monday line')
    setup.rotator.tick(local(2026, 1, 5, 23, 59, 59))
    assert setup.backups('web') == []
    setup.rotator.tick(local(2026, 1, 6, 0, 0, 0, 1))
    setup.write('web', 'tuesday line')
    setup.settle()
    assert setup.backups('web') == ['web.log.%s.xz' % stamp_at(2026, 1, 5, 10, 0, 0)]
    assert setup.lines('web') == [['monday line'], ['tuesday line']]
    assert setup.rotator.next_due == local(2026, 1, 7)


def test_an_empty_file_is_not_rotated_on_schedule_but_moves_on(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 23, 0))
    setup.write('web', 'before the forced rotation')
    setup.rotator.rotate_all(local(2026, 1, 5, 23, 59))
    setup.rotator.tick(local(2026, 1, 6, 0, 0, 1))
    setup.settle()
    assert setup.backups('web') == ['web.log.%s.xz' % stamp_at(2026, 1, 5, 23, 0, 0)]
    assert setup.rotator.next_due == local(2026, 1, 7)
    setup.write('web', 'on tuesday')
    setup.rotator.tick(local(2026, 1, 7, 0, 0, 1))
    setup.settle()
    assert setup.backups('web')[-1] == 'web.log.%s.xz' % stamp_at(2026, 1, 6, 0, 0, 1)


def test_max_size_rotates_before_the_write_that_would_pass_it(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    setup.write('root', 'a' * 599)
    setup.write('root', 'b' * 399)
    assert setup.backups('root') == []
    setup.clock.now += 1
    setup.write('root', 'c' * 9)
    setup.settle()
    assert setup.lines('root') == [['a' * 599, 'b' * 399], ['c' * 9]]
    assert setup.counters.rotations == 1


def test_one_batch_larger_than_max_size_lands_whole_in_the_file(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    setup.write('root', 'x' * 5000)
    setup.write('root', 'y')
    setup.settle()
    assert setup.lines('root') == [['x' * 5000], ['y']]


def test_queued_lines_go_to_the_new_file_exactly_once(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    setup.write('web', 'written')
    logfile = setup.writer.file_for(setup.facilities.lookup('app', 'web'), 'host')
    logfile.pending.append('queued\n')
    setup.rotator.rotate_all(local(2026, 1, 5, 10, 1))
    setup.writer.flush_file(logfile)
    setup.settle()
    assert setup.lines('web') == [['written'], ['queued']]


def test_several_rotations_in_one_second_get_distinct_names(tmp_path):
    now = local(2026, 1, 5, 10, 0, 0)
    setup = Setup(tmp_path, now)
    for number in range(4):
        setup.write('web', 'line %d' % number)
        setup.rotator.rotate_all(now)
    setup.settle()
    names = setup.backups('web')
    assert len(names) == 2 and len(set(names)) == 2  # backup_count 2
    assert [lines for lines in setup.lines('web')] == [['line 2'], ['line 3'], []]


def test_retention_keeps_backup_count_per_file_and_never_a_longer_name(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    for number in range(5):
        setup.write('web', 'web %d' % number)
        setup.write('web.requests', 'requests %d' % number)
        setup.rotator.rotate_all(local(2026, 1, 5, 10, number + 1))
        setup.settle()
    assert setup.lines('web') == [['web 3'], ['web 4'], []]
    assert setup.lines('web.requests') == [['requests 3'], ['requests 4'], []]


def test_a_reload_that_removes_a_facility_leaves_its_backups_alone(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    setup.write('web', 'kept')
    setup.rotator.rotate_all(local(2026, 1, 5, 10, 1))
    setup.settle()
    facilities_path = tmp_path / 'facilities.conf'
    facilities_path.write_text('[app]\nrotate = hourly\nbackup_count = 0\n')
    setup.rotator.set_facilities(load_facilities(str(facilities_path)), local(2026, 1, 5, 10, 2))
    setup.rotator.tick(local(2026, 1, 6, 10, 0))
    assert setup.backups('web') == ['web.log.%s.xz' % stamp_at(2026, 1, 5, 10, 0, 0)]


def test_rotation_time_survives_a_restart_and_an_overdue_file_rotates_at_start(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    setup.write('web', 'monday')
    setup.writer.close_files()
    setup.rotator.stop()
    again = Setup(tmp_path, local(2026, 1, 7, 9, 0))
    again.settle()
    assert again.backups('web') == ['web.log.%s.xz' % stamp_at(2026, 1, 5, 10, 0, 0)]
    assert again.rotator.next_due == local(2026, 1, 8)


def test_a_restart_forgets_the_rotation_times_of_deleted_files_and_keeps_the_rest(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    setup.write('web', 'kept')
    setup.write('web.requests', 'deleted by the operator')
    setup.writer.close_files()
    setup.rotator.stop()
    os.unlink(setup.path('web.requests'))
    again = Setup(tmp_path, local(2026, 1, 5, 11, 0))
    saved = RotationState.load(again.rotator.state.path)
    assert saved.paths() == [setup.path('web')]
    assert saved.last_rotation(setup.path('web')) == datetime(2026, 1, 5, 10, 0, tzinfo=tz.tzlocal())
    again.write('web.requests', 'back again')
    again.rotator.tick(local(2026, 1, 6, 0, 0, 1))
    again.settle()
    assert again.backups('web.requests') == ['web.requests.log.%s.xz' % stamp_at(2026, 1, 5, 11, 0, 0)]


def fake_tool(directory, name: str, script: str) -> None:
    path = os.path.join(str(directory), name)
    with open(path, 'w') as stream:
        stream.write('#!/bin/sh\n' + script + '\n')
    os.chmod(path, stat.S_IRWXU)


def test_failed_compression_keeps_the_plain_backup_and_says_why(tmp_path, monkeypatch, caplog):
    fake_tool(tmp_path, 'xz', 'echo "xz: out of memory" >&2; exit 1')
    monkeypatch.setenv('PATH', str(tmp_path))
    counters = Counters()
    compressor = Compressor('xz', 6, counters)
    plain = tmp_path / 'root.log.2026-01-01-00-00-00-000000'
    plain.write_text('a line\n')
    finished = []
    compressor.submit(str(plain), finished.append)
    deadline = time.monotonic() + 10
    while compressor.running:
        assert time.monotonic() < deadline
        time.sleep(0.02)
        compressor.reap()
    assert finished == [str(plain)]
    assert sorted(os.listdir(tmp_path)) == ['root.log.2026-01-01-00-00-00-000000', 'xz']
    assert counters.compression_failures == 1 and counters.compressions == 0
    assert 'xz exited with 1: xz: out of memory' in caplog.text


def test_at_most_two_compressors_run_and_the_rest_wait(tmp_path, monkeypatch):
    fake_tool(tmp_path, 'gzip', 'exec sleep 0.3')
    monkeypatch.setenv('PATH', str(tmp_path) + os.pathsep + os.environ['PATH'])
    compressor = Compressor('gzip', 6, Counters())
    for number in range(5):
        path = tmp_path / ('a.log.2026-01-01-00-00-00-00000%d' % number)
        path.write_text('x\n')
        compressor.submit(str(path), lambda _plain: None)
    most = 0
    deadline = time.monotonic() + 20
    while not compressor.idle:
        assert time.monotonic() < deadline
        most = max(most, len(compressor.running))
        time.sleep(0.02)
        compressor.reap()
    assert most == 2
    assert len([name for name in os.listdir(tmp_path) if name.endswith('.gz')]) == 5


def test_recovery_removes_half_archives_and_compresses_plain_backups(tmp_path):
    (tmp_path / 'a.log.2026-01-01-00-00-00-000000').write_text('plain\n')
    (tmp_path / 'a.log.2026-01-01-00-00-00-000000.xz.tmp').write_bytes(b'half')
    (tmp_path / 'a.log.2026-01-02-00-00-00-000000').write_text('done\n')
    (tmp_path / 'a.log.2026-01-02-00-00-00-000000.gz').write_bytes(b'finished archive')
    (tmp_path / 'a.log.notabackup').write_text('x\n')
    compressor = Compressor('xz', 0, Counters())
    recover(list_directories([str(tmp_path)]), compressor, lambda _plain: None)
    while not compressor.idle:
        time.sleep(0.02)
        compressor.reap()
    assert sorted(os.listdir(tmp_path)) == ['a.log.2026-01-01-00-00-00-000000.xz',
                                            'a.log.2026-01-02-00-00-00-000000.gz', 'a.log.notabackup']
    with lzma.open(str(tmp_path / 'a.log.2026-01-01-00-00-00-000000.xz'), 'rt') as stream:
        assert stream.read() == 'plain\n'


def test_a_line_cut_short_by_a_kill_is_ended_before_the_next_one(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    os.makedirs(os.path.dirname(setup.path('web')))
    with open(setup.path('web'), 'w') as stream:
        stream.write('whole line\ncut sh')
    setup.write('web', 'next line')
    setup.write('web', 'and another')
    with open(setup.path('web')) as stream:
        assert stream.read() == 'whole line\ncut sh\nnext line\nand another\n'


def test_a_state_save_cut_short_leaves_nothing_behind_after_the_next_start(tmp_path):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0))
    leftover = os.path.join(setup.config.main.workdir, '.rotation-state.k1ll3d')
    with open(leftover, 'w') as stream:
        stream.write('{"version": 1, "last_rot')
    Setup(tmp_path, local(2026, 1, 5, 10, 1))
    assert not os.path.exists(leftover)
