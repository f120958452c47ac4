"""Links in the log directory lead nowhere: loghogd as root (no [main] user) never follows them.

Each test plants a symbolic link where a log file, an app directory or a
backup belongs, pointing at a file or directory outside the log
directory, and shows the target untouched, the link refused in the
internal log and counted in the stats.
"""

import glob
import json
import os
import signal

import pytest

from loghogd.service import STATS_FILE
from tests.support.daemon import Loghogd, facilities_conf, frame, wait_for

FACILITIES = facilities_conf({'app': {}, 'other': {}, 'hosts': {'file_per_host': 'yes'}})
SECRET = b'root:only\n'


def refusals(daemon: Loghogd) -> int:
    try:
        with open(os.path.join(daemon.rundir, STATS_FILE), encoding='utf-8') as stream:
            return json.load(stream).get('unsafe_paths_refused', 0)
    except (OSError, ValueError):
        return 0


def internal_log(daemon: Loghogd) -> str:
    """The internal log and its backups (SIGUSR2 rotates it too)."""
    text = ''
    for path in glob.glob(daemon.internal_log + '*'):
        with open(path, encoding='utf-8', errors='replace') as stream:
            text += stream.read()
    return text


def rotate_all(daemon: Loghogd) -> None:
    """SIGUSR2 once the daemon handles it (listening.json is written before its handlers are in place)."""
    wait_for(lambda: 'loghogd %d ready' % daemon.process.pid in internal_log(daemon), 10, 'loghogd to be ready')
    daemon.send_signal(signal.SIGUSR2)


def wait_refused(daemon: Loghogd, path: str) -> None:
    wait_for(lambda: refusals(daemon) >= 1, 10, 'a refusal counted in the stats')
    wait_for(lambda: '%s is a symbolic link where a' % path in internal_log(daemon), 10,
             'the refusal of %s in the internal log' % path)


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / 'outside'
    directory.mkdir()
    return directory


def test_a_record_is_not_appended_through_a_linked_log_file(tmp_path, outside):
    target = outside / 'target'
    target.write_bytes(SECRET)
    daemon = Loghogd(tmp_path, FACILITIES)
    os.makedirs(daemon.path('app'))
    os.symlink(target, daemon.path('app/root.log'))
    with daemon:
        daemon.send_tcp(frame('app', 'root', 'must not leave the log directory'))
        daemon.send_tcp(frame('other', 'root', 'a real file elsewhere is written'))
        daemon.wait_for_lines('other/root.log', 1)
        wait_refused(daemon, daemon.path('app/root.log'))
    assert target.read_bytes() == SECRET


def test_no_file_is_created_through_a_linked_app_directory(tmp_path, outside):
    daemon = Loghogd(tmp_path, FACILITIES)
    os.makedirs(daemon.logdir)
    os.symlink(outside, daemon.path('hosts'))
    with daemon:
        daemon.send_tcp(frame('hosts', 'root', 'must not leave the log directory', hostname='web1'))
        daemon.send_tcp(frame('app', 'root', 'another facility is written'))
        daemon.wait_for_lines('app/root.log', 1)
        wait_refused(daemon, daemon.path('hosts'))
    assert os.listdir(outside) == []


def test_a_linked_app_directory_is_neither_rotated_nor_compressed(tmp_path, outside):
    (outside / 'root.log').write_bytes(SECRET)
    daemon = Loghogd(tmp_path, FACILITIES)
    os.makedirs(daemon.logdir)
    os.symlink(outside, daemon.path('app'))
    with daemon:
        rotate_all(daemon)
        wait_refused(daemon, daemon.path('app'))
    assert sorted(os.listdir(outside)) == ['root.log']
    assert (outside / 'root.log').read_bytes() == SECRET


@pytest.fixture
def secret(outside):
    """A root-only file outside the log directory."""
    path = outside / 'secret'
    path.write_bytes(SECRET * 100)
    os.chmod(path, 0o600)
    return path


def test_a_root_only_file_behind_a_linked_log_file_is_not_compressed_into_the_log_directory(tmp_path, secret):
    daemon = Loghogd(tmp_path, FACILITIES)
    os.makedirs(daemon.path('app'))
    os.symlink(secret, daemon.path('app/root.log'))
    with daemon:
        rotate_all(daemon)
        wait_refused(daemon, daemon.path('app/root.log'))
    assert os.listdir(daemon.path('app')) == ['root.log']
    assert os.path.islink(daemon.path('app/root.log'))
    assert secret.read_bytes() == SECRET * 100


def test_a_linked_backup_found_at_start_up_is_not_compressed(tmp_path, secret):
    daemon = Loghogd(tmp_path, FACILITIES)
    os.makedirs(daemon.path('app'))
    backup = daemon.path('app/root.log.2020-01-01-00-00-00-000000')
    os.symlink(secret, backup)
    with daemon:
        wait_for(lambda: refusals(daemon) >= 1, 10, 'a refusal counted in the stats')
        wait_for(lambda: 'not compressing %s: %s is a symbolic link' % (backup, backup) in internal_log(daemon), 10,
                 'the refusal in the internal log')
    assert os.listdir(daemon.path('app')) == [os.path.basename(backup)]
    assert secret.read_bytes() == SECRET * 100
