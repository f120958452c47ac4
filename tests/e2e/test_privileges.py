"""What loghogd's own user can do to root: nothing it plants in its directories makes root write elsewhere.

With [main] user set, that user owns the log and work directories between
two starts. These tests start loghogd as root, let the real unprivileged
account plant links and forged state exactly as it could, and start again.
"""

import json
import os
import stat

import pytest

from loghogd.daemon import process_alive, read_pidfile
from tests.support.accounts import TEST_USER, run_as
from tests.support.daemon import Loghogd, facilities_conf, frame, wait_for

FACILITIES = facilities_conf({'app': {}})
VICTIM = b'root-owned content\n' * 50


@pytest.fixture
def victims(open_directory):
    """Root-owned files outside every loghogd directory, readable by all (as /etc/passwd is)."""
    directory = os.path.join(open_directory, 'victims')
    os.mkdir(directory)
    paths = []
    for name in ('appended', 'truncated'):
        path = os.path.join(directory, name)
        with open(path, 'wb') as stream:
            stream.write(VICTIM)
        os.chmod(path, 0o644)
        paths.append(path)
    return paths


def first_start(open_directory: str) -> Loghogd:
    """A daemon with user = TEST_USER and its internal log in the log directory, started once and stopped."""
    daemon = Loghogd(open_directory, FACILITIES)
    daemon.internal_log = os.path.join(daemon.logdir, 'loghogd.log')
    daemon.write_config({'main': {'user': TEST_USER}, 'log': {'filename': daemon.internal_log, 'level': 'INFO'}})
    started = daemon.start_detached()
    assert started.returncode == 0, started.stderr
    daemon.send_tcp(frame('app', 'root', 'first start'))
    daemon.wait_for_lines('app/root.log', 1)
    daemon.stop()
    return daemon


def as_user(user, *command: str) -> None:
    done = run_as(user, list(command))
    assert done.returncode == 0, done.stderr


def test_links_and_forged_journal_planted_by_the_user_leave_root_files_untouched(test_user, open_directory,
                                                                                   victims):
    appended, truncated = victims
    daemon = first_start(open_directory)
    as_user(test_user, 'ln', '-sf', appended, daemon.internal_log)
    intent = {'time': 1.0, 'handled': {}, 'files': {truncated: [0, 10 ** 9, {'forged': [[1, 1]]}]}}
    as_user(test_user, 'sh', '-c', 'printf "%s\\n" "$1" >> "$2"', '-', 'I ' + json.dumps(intent),
            os.path.join(daemon.workdir, 'ack-journal'))

    refused = daemon.start_detached()
    assert refused.returncode == 1
    assert 'cannot open the internal log [log] filename = %s: %s is a symbolic link' % (
        daemon.internal_log, daemon.internal_log) in refused.stderr
    os.unlink(daemon.internal_log)  # what the operator told by that message does

    started = daemon.start_detached()
    assert started.returncode == 0, started.stderr
    try:
        daemon.send_tcp(frame('app', 'root', 'second start'))
        daemon.wait_for_lines('app/root.log', 2)
        wait_for(lambda: 'the acknowledgement journal names %s' % truncated in open(daemon.internal_log).read(),
                 10, 'the refusal of the forged journal entry')
    finally:
        daemon.stop()
    for path in victims:
        with open(path, 'rb') as stream:
            assert stream.read() == VICTIM, path
        assert os.stat(path).st_uid == 0


def test_the_user_cannot_replace_or_remove_the_pid_file(test_user, open_directory):
    daemon = Loghogd(open_directory, FACILITIES, config={'main': {'user': TEST_USER}})
    started = daemon.start_detached()
    assert started.returncode == 0, started.stderr
    pid = daemon.detached_pid
    try:
        forged = os.path.join(daemon.rundir, 'forged')
        replaced = run_as(test_user, ['sh', '-c', 'echo 1 > "$1" && mv -f "$1" "$2"', '-', forged, daemon.pidfile])
        removed = run_as(test_user, ['rm', '-f', daemon.pidfile])
        assert replaced.returncode != 0 and removed.returncode != 0
        assert read_pidfile(daemon.pidfile) == pid
        info = os.stat(daemon.pidfile)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o644)
        rundir = os.stat(daemon.rundir)
        assert (rundir.st_uid, rundir.st_gid, stat.S_IMODE(rundir.st_mode)) == (0, test_user.pw_gid, 0o1770)
        status = os.stat(os.path.join(daemon.rundir, 'loghogd.stats.json'))
        assert status.st_uid == test_user.pw_uid
    finally:
        daemon.stop()
    assert read_pidfile(daemon.pidfile) == pid and not process_alive(pid)
    os.unlink(daemon.pidfile)  # as systemd does after the stop
    as_user(test_user, 'mkfifo', daemon.pidfile)
    again = daemon.start_detached(timeout=30)
    assert again.returncode == 0, again.stderr
    assert 'removing the stale PID file %s (no PID in it)' % daemon.pidfile in again.stderr
    daemon.stop()
