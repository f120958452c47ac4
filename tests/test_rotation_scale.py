"""Rotation with many per-host files costs what it touches: counted directory listings, state saves, passes.

No timing is asserted: the quadratic behaviour shows as work per file
(a directory listing per rotated file, a state save per second of new
hosts, every file renamed in one loop pass), which these tests count.
"""

import os
import signal

import pytest

from loghogd import rotation
from loghogd.names import parse_backup
from loghogd.schedule import RotationState
from loghogd.service import Service
from tests.test_rotation import Setup, local

HOSTS = 120
PER_PASS = 50
KEPT = 2
PER_HOST = """
[hosts]
rotate = daily
backup_count = %d
file_per_host = yes
""" % KEPT
OLD_STAMPS = ('2026-01-01-00-00-00-000000', '2026-01-02-00-00-00-000000', '2026-01-03-00-00-00-000000')


@pytest.fixture(autouse=True)
def small_passes(monkeypatch):
    """Fewer files per pass, so that a few host files already need several passes."""
    monkeypatch.setattr(rotation, 'ROTATIONS_PER_PASS', PER_PASS)


@pytest.fixture
def listings(monkeypatch):
    """Counts every directory listing (os.listdir, os.scandir) made in the test's process."""
    count = [0]
    listdir, scandir = os.listdir, os.scandir

    def counted_listdir(*args):
        count[0] += 1
        return listdir(*args)

    def counted_scandir(*args):
        count[0] += 1
        return scandir(*args)
    monkeypatch.setattr(os, 'listdir', counted_listdir)
    monkeypatch.setattr(os, 'scandir', counted_scandir)
    return count


def host_files(tmp_path) -> str:
    """HOSTS per-host files with a line each and three old (already compressed) backups each."""
    directory = tmp_path / 'log' / 'hosts'
    directory.mkdir(parents=True)
    for index in range(HOSTS):
        name = 'host%04d@root.log' % index
        (directory / name).write_text('line of host %d\n' % index)
        for stamp in OLD_STAMPS:
            (directory / ('%s.%s.xz' % (name, stamp))).write_bytes(b'old archive')
    return str(directory)


def backups_by_host(directory: str) -> dict:
    found: dict = {}
    for name in os.listdir(directory):
        backup = parse_backup(name)
        if backup is not None:
            found.setdefault(backup.live, []).append(name)
    return found


def test_start_up_and_a_rotation_of_every_host_file_list_each_directory_once(tmp_path, listings):
    directory = host_files(tmp_path)
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0), PER_HOST)
    after_start = listings[0]
    setup.rotator.rotate_all(local(2026, 1, 5, 11, 0))
    while setup.rotator.next_wakeup(local(2026, 1, 5, 11, 0)) == 0:
        setup.rotator.tick(local(2026, 1, 5, 11, 0))
    during_rotation = listings[0] - after_start
    setup.settle()
    setup.rotator.reap()
    assert after_start <= 6, 'start-up listed directories %d times for %d host files' % (after_start, HOSTS)
    assert during_rotation == 0, 'a rotation of %d files listed directories %d times' % (HOSTS, during_rotation)
    kept = backups_by_host(directory)
    assert len(kept) == HOSTS
    assert all(len(names) == KEPT for names in kept.values())
    assert sorted(kept['host0000@root.log'])[0] == 'host0000@root.log.%s.xz' % OLD_STAMPS[2]


def test_a_rotation_of_many_files_is_spread_over_loop_passes(tmp_path):
    directory = host_files(tmp_path)
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0), PER_HOST)
    now = local(2026, 1, 5, 11, 0)
    setup.rotator.rotate_all(now)
    passes = 1
    renamed = [HOSTS - sum(os.path.exists(os.path.join(directory, 'host%04d@root.log' % index))
                           for index in range(HOSTS))]
    while setup.rotator.next_wakeup(now) == 0:
        setup.rotator.tick(now)
        passes += 1
    assert renamed[0] == PER_PASS
    assert passes == -(-HOSTS // PER_PASS)
    assert setup.counters.rotations == HOSTS
    setup.rotator.stop()


def test_a_stop_in_the_middle_of_a_spread_rotation_leaves_the_rest_for_their_schedule(tmp_path):
    directory = host_files(tmp_path)
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0), PER_HOST)
    setup.rotator.rotate_all(local(2026, 1, 5, 11, 0))
    setup.rotator.stop()
    unrotated = [index for index in range(HOSTS)
                 if os.path.exists(os.path.join(directory, 'host%04d@root.log' % index))]
    assert len(unrotated) == HOSTS - PER_PASS
    state = RotationState.load(setup.rotator.state.path)
    last = state.last_rotation(os.path.join(directory, 'host%04d@root.log' % unrotated[0]))
    assert last.timestamp() < local(2026, 1, 5, 11, 0)
    restarted = Setup(tmp_path, local(2026, 1, 6, 0, 0, 1), PER_HOST)
    assert not any(os.path.exists(os.path.join(directory, 'host%04d@root.log' % index)) for index in unrotated[:5])
    restarted.rotator.stop()


def test_new_hosts_do_not_rewrite_the_rotation_state_every_second(tmp_path, monkeypatch):
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0), PER_HOST)
    saves = [0]
    save = RotationState.save

    def counted_save(self):
        saves[0] += 1
        save(self)
    monkeypatch.setattr(RotationState, 'save', counted_save)
    facility = setup.facilities.lookup('hosts', 'root')
    for second in range(30):
        setup.clock.now = local(2026, 1, 5, 10, 0, second + 1)
        logfile = setup.writer.file_for(facility, 'new%02d' % second)
        logfile.pending.append('hello\n')
        setup.writer.flush_file(logfile)
        setup.rotator.tick(setup.clock.now)
    assert saves[0] == 0
    setup.rotator.stop()
    assert saves[0] == 1
    state = RotationState.load(setup.rotator.state.path)
    assert len(state.paths()) == 30


class Idle:
    """The parts of a Service that a loop pass asks for its next timeout, with nothing to do."""

    def timed_work(self, _now):
        pass

    def tick(self, _now):
        pass

    def next_wakeup(self, _now):
        return 60.0

    def flush(self):
        pass

    def next_flush(self):
        return 60.0

    def pump(self, _now):
        return False


def test_a_chain_of_compressor_exits_cannot_hold_one_loop_pass():
    """Each SIGCHLD starts the next compressor, whose exit arrives while the pass handles the last one."""
    service = Service.__new__(Service)
    service.server = service.rotator = service.reporter = service.stream_links = Idle()
    service._stats_due = float('inf')
    handled = []

    def handle(signum):
        handled.append(signum)
        if len(handled) < 1000:
            service._signals.append(signal.SIGCHLD)
    service._handle_signal = handle
    service._signals = [signal.SIGCHLD, signal.SIGCHLD, signal.SIGTERM]
    service._between_passes(0.0)
    assert handled == [signal.SIGCHLD, signal.SIGTERM]
    assert service._signals == [signal.SIGCHLD, signal.SIGCHLD]


def test_a_backup_deleted_by_hand_no_longer_counts_toward_backup_count(tmp_path):
    directory = host_files(tmp_path)
    setup = Setup(tmp_path, local(2026, 1, 5, 10, 0), PER_HOST)
    kept = sorted(backups_by_host(directory)['host0000@root.log'])
    os.unlink(os.path.join(directory, kept[-1]))
    setup.rotator.rotate_all(local(2026, 1, 5, 11, 0))
    while setup.rotator.next_wakeup(local(2026, 1, 5, 11, 0)) == 0:
        setup.rotator.tick(local(2026, 1, 5, 11, 0))
    setup.settle()
    setup.rotator.reap()
    names = sorted(backups_by_host(directory)['host0000@root.log'])
    assert names == [kept[0], 'host0000@root.log.2026-01-05-10-00-00-000000Z.xz']
