"""post_rotate hooks as an operator meets them: a real loghogd runs a real script on each finished backup."""

import os
import stat
import subprocess

from tests.e2e.test_rotation import force_rotation, send_and_wait, settled_backups
from tests.support.daemon import Loghogd, frame, wait_for

GZIP = {'compressor': {'format': 'gzip', 'level': '1'}}


def script(tmp_path, name: str, body: str) -> str:
    """An executable /bin/sh script; RECORD in `body` is the file it may append to."""
    path = tmp_path / name
    path.write_text('#!/bin/sh\n' + body.replace('RECORD', str(tmp_path / (name + '.record'))))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def records(tmp_path, name: str) -> list:
    try:
        return (tmp_path / (name + '.record')).read_text().splitlines()
    except FileNotFoundError:
        return []


RECORDER = ('printf "%s|%s|%s|%s|%s\\n" "$LOGHOGD_APP" "$LOGHOGD_MODULE" "$LOGHOGD_HOST" "$LOGHOGD_BACKUP" "$*"'
            ' >> RECORD\n')


def test_the_hook_gets_the_final_backup_its_arguments_and_the_facility(tmp_path):
    recorder = script(tmp_path, 'recorder', RECORDER)
    facilities = ('[shop]\nrotate = daily\nbackup_count = 5\npost_rotate = %s --bucket "two words"\n'
                  '[shop:web]\nrotate = daily\nbackup_count = 5\nfile_per_host = yes\n' % recorder)
    (tmp_path / 'daemon').mkdir()
    with Loghogd(tmp_path / 'daemon', facilities, config=GZIP) as daemon:
        send_and_wait(daemon, 'shop', 'root line', 'shop/root.log')
        daemon.send_tcp(frame('shop', 'web', 'web line', hostname='web1'))
        daemon.wait_for_lines('shop/web1@web.log', 1)
        force_rotation(daemon, 'shop/root.log', 'shop/web1@web.log')
        [root_backup] = settled_backups(daemon, 'shop/root.log', '.gz')
        [web_backup] = settled_backups(daemon, 'shop/web1@web.log', '.gz')
        wait_for(lambda: len(records(tmp_path, 'recorder')) == 2, 20, 'two hooks to run')
        stats = wait_for(lambda: (lambda found: found if found['hooks_succeeded'] == 2 else None)(daemon.stats()),
                         10, 'the hooks to be reaped')
        status = subprocess.run(daemon.command('--status'), capture_output=True, text=True, timeout=30).stdout
    shop = daemon.path('shop')
    assert sorted(records(tmp_path, 'recorder')) == sorted([
        'shop|root||%s|--bucket two words %s' % (os.path.join(shop, root_backup), os.path.join(shop, root_backup)),
        'shop|web|web1|%s|--bucket two words %s' % (os.path.join(shop, web_backup), os.path.join(shop, web_backup))])
    assert (stats['hooks_started'], stats['hook_failures'], stats['hook_timeouts']) == (2, 0, 0)
    shown = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in status.splitlines()
             if line.startswith('post_rotate hooks')}
    assert shown == {'post_rotate hooks started': '2', 'post_rotate hooks succeeded': '2',
                     'post_rotate hooks failed': '0', 'post_rotate hooks timed out': '0',
                     'post_rotate hooks dropped (queue full)': '0'}


def test_a_failing_hook_is_counted_and_logged_with_its_status_and_stderr(tmp_path):
    failing = script(tmp_path, 'failing', 'echo "upload refused: bucket gone" >&2\nexit 3\n')
    (tmp_path / 'daemon').mkdir()
    with Loghogd(tmp_path / 'daemon', '[app]\nrotate = daily\nbackup_count = 5\npost_rotate = %s\n' % failing,
                 config=GZIP) as daemon:
        send_and_wait(daemon, 'app', 'a line', 'app/root.log')
        force_rotation(daemon, 'app/root.log')
        settled_backups(daemon, 'app/root.log', '.gz')
        output = daemon.wait_for_output('exited with status 3', 20)
        stats = daemon.stats()
    assert 'upload refused: bucket gone' in output.split('exited with status 3')[1].splitlines()[0]
    assert (stats['hooks_started'], stats['hook_failures'], stats['hooks_succeeded']) == (1, 1, 0)


def test_a_hook_past_its_timeout_is_killed_and_counted(tmp_path):
    sleeper = script(tmp_path, 'sleeper', 'echo started >> RECORD\nexec sleep 120\n')
    facilities = '[app]\nrotate = daily\nbackup_count = 5\npost_rotate = %s\npost_rotate_timeout = 1\n' % sleeper
    (tmp_path / 'daemon').mkdir()
    with Loghogd(tmp_path / 'daemon', facilities, config=GZIP) as daemon:
        send_and_wait(daemon, 'app', 'a line', 'app/root.log')
        force_rotation(daemon, 'app/root.log')
        daemon.wait_for_output('killed after its timeout of 1 s', 30)
        stats = daemon.stats()
    assert records(tmp_path, 'sleeper') == ['started']
    assert (stats['hook_timeouts'], stats['hook_failures']) == (1, 1)


def test_no_more_hooks_run_at_once_than_max_running_and_a_shell_runs_only_when_asked(tmp_path):
    exclusive = script(tmp_path, 'exclusive', 'mkdir RECORD.lock || echo overlap >> RECORD\nsleep 0.3\n'
                       'echo "$1" >> RECORD\nrmdir RECORD.lock\n')
    shell_record = tmp_path / 'shell.record'
    facilities = ('[app]\nrotate = daily\nbackup_count = 10\npost_rotate = %s\n'
                  '[shell]\nrotate = daily\nbackup_count = 10\n'
                  'post_rotate = /bin/sh -c \'echo "$0 $1" >> %s\' from-sh\n' % (exclusive, shell_record))
    (tmp_path / 'daemon').mkdir()
    with Loghogd(tmp_path / 'daemon', facilities, config={**GZIP, 'hooks': {'max_running': '1'}}) as daemon:
        for number in range(4):
            send_and_wait(daemon, 'app', 'line %d' % number, 'app/root.log')
            send_and_wait(daemon, 'shell', 'line %d' % number, 'shell/root.log')
            force_rotation(daemon, 'app/root.log', 'shell/root.log')
        names = settled_backups(daemon, 'app/root.log', '.gz', 4)
        wait_for(lambda: len(records(tmp_path, 'exclusive')) == 4, 30, 'four hooks to run')
        wait_for(lambda: shell_record.exists() and len(shell_record.read_text().splitlines()) == 4, 30,
                 'four shell hooks')
    assert sorted(records(tmp_path, 'exclusive')) == sorted(os.path.join(daemon.path('app'), name) for name in names)
    assert all(line.startswith('from-sh %s/' % daemon.path('shell')) for line in shell_record.read_text().splitlines())


def test_hooks_run_as_the_daemons_user_and_files_take_its_group_after_the_drop(test_user, open_directory):
    record = os.path.join(open_directory, 'whoami.record')
    with open(record, 'w'):
        pass
    os.chmod(record, 0o666)
    hook = os.path.join(open_directory, 'whoami')
    with open(hook, 'w') as stream:
        stream.write('#!/bin/sh\necho "$(id -u) $(id -g) $1" >> %s\n' % record)
    os.chmod(hook, 0o755)
    facilities = ('[app]\nrotate = daily\nbackup_count = 3\nfile_mode = 0660\nfile_group = %d\npost_rotate = %s\n'
                  % (test_user.pw_gid, hook))
    with Loghogd(open_directory, facilities, config={**GZIP, 'main': {'user': test_user.pw_name}}) as daemon:
        send_and_wait(daemon, 'app', 'a line', 'app/root.log')
        force_rotation(daemon, 'app/root.log')
        [name] = settled_backups(daemon, 'app/root.log', '.gz')
        wait_for(lambda: open(record).read(), 20, 'the hook to run')
        with open(record) as stream:
            uid, gid, path = stream.read().split()
    backup = os.stat(os.path.join(daemon.path('app'), name))
    assert (int(uid), int(gid)) == (test_user.pw_uid, test_user.pw_gid)
    assert path == os.path.join(daemon.path('app'), name)
    assert (stat.S_IMODE(backup.st_mode), backup.st_uid, backup.st_gid) == (0o660, test_user.pw_uid, test_user.pw_gid)
