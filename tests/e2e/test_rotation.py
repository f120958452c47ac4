"""Rotation, retention and compression as an operator meets them: a real loghogd, real files, real tools."""

import bz2
import gzip
import json
import lzma
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta

import pytest
from dateutil import tz

from loghogd.names import backup_stamp, stamp_time
from tests.support.daemon import Loghogd, bodies, frame, wait_for

STAMP = r'\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{6}Z?'
OPENERS = {'': open, '.xz': lzma.open, '.gz': gzip.open, '.bz2': bz2.open}
TOOLS = {'xz': '.xz', 'zstd': '.zst', 'gzip': '.gz', 'bzip2': '.bz2'}


def backups(daemon: Loghogd, relative: str) -> list:
    """Names of the backups of a live file, oldest first (plain, compressed or half-written)."""
    directory, base = os.path.split(daemon.path(relative))
    pattern = re.compile(re.escape(base) + r'\.' + STAMP + r'(\.xz|\.zst|\.gz|\.bz2)?(\.tmp)?\Z')
    try:
        return sorted(name for name in os.listdir(directory) if pattern.match(name))
    except FileNotFoundError:
        return []


def settled_backups(daemon: Loghogd, relative: str, extension: str = '.xz', count: int = 1,
                    timeout: float = 20.0) -> list:
    """Wait until `count` backups exist and all are compressed with `extension`."""
    def settled():
        names = backups(daemon, relative)
        return names if len(names) == count and all(name.endswith(extension) for name in names) else None
    return wait_for(settled, timeout, '%d %s backups of %s (have %s)' % (count, extension, relative,
                                                                         backups(daemon, relative)))


def backup_lines(daemon: Loghogd, relative: str, name: str) -> list:
    """The lines of backup `name` of the live file `relative`, decompressed."""
    path = os.path.join(os.path.dirname(daemon.path(relative)), name)
    extension = os.path.splitext(name)[1] if not re.search(STAMP + r'\Z', name) else ''
    with OPENERS[extension](path, 'rt', encoding='utf-8', newline='') as stream:
        return stream.read().splitlines(keepends=True)


def backup_bodies(daemon: Loghogd, relative: str, name: str) -> list:
    return bodies(backup_lines(daemon, relative, name))


def all_bodies(daemon: Loghogd, relative: str) -> list:
    """Bodies in the backups (oldest first, decompressed) and then the live file."""
    while True:
        try:
            found = [body for name in backups(daemon, relative) if not name.endswith('.tmp')
                     for body in backup_bodies(daemon, relative, name)]
            return found + bodies(daemon.read_lines(relative))
        except (FileNotFoundError, EOFError):
            continue  # a backup was compressed while we read it


def send_and_wait(daemon: Loghogd, app: str, body: str, relative: str, module: str = 'root') -> None:
    daemon.send_tcp(frame(app, module, body))
    wait_for(lambda: body in all_bodies(daemon, relative), 10, '%r in %s' % (body, relative))


def rotations(daemon: Loghogd) -> int:
    return daemon.stats()['rotations']


def force_rotation(daemon: Loghogd, *relatives: str) -> None:
    """SIGUSR2, then wait until the live files are new and empty."""
    daemon.send_signal(signal.SIGUSR2)
    wait_for(lambda: all(os.path.exists(daemon.path(relative)) and os.path.getsize(daemon.path(relative)) == 0
                         for relative in relatives), 10, 'rotation of %s after SIGUSR2' % (relatives,))


def write_state(daemon: Loghogd, rotations_by_path: dict) -> None:
    os.makedirs(daemon.workdir, exist_ok=True)
    document = {'version': 1, 'last_rotation': {path: when.isoformat() for path, when in rotations_by_path.items()}}
    with open(os.path.join(daemon.workdir, 'rotation-state.json'), 'w', encoding='utf-8') as stream:
        json.dump(document, stream)


def test_per_minute_cron_rotates_within_its_minute_with_no_traffic(tmp_path):
    with Loghogd(tmp_path, '[minute]\nrotate = * * * * *\nbackup_count = 5\n') as daemon:
        send_and_wait(daemon, 'minute', 'only line', 'minute/root.log')
        sent = time.time()
        [name] = settled_backups(daemon, 'minute/root.log', timeout=75)
        assert time.time() - sent < 75
        assert backup_bodies(daemon, 'minute/root.log', name) == ['only line']
        assert daemon.read_lines('minute/root.log') == []
        assert stamp_time(name[len('root.log.'):-len('.xz')]) <= sent


def test_size_rotates_before_the_write_that_would_pass_max_size(tmp_path):
    with Loghogd(tmp_path, '[sized]\nrotate = size\nmax_size = 1000\nbackup_count = 50\n',
                 config={'compressor': {'format': 'gzip', 'level': '1'}}) as daemon:
        sent = ['record %03d %s' % (number, 'x' * 40) for number in range(40)]
        for body in sent:
            send_and_wait(daemon, 'sized', body, 'sized/root.log')
        names = wait_for(lambda: (lambda found: found if len(found) >= 3 and all(
            name.endswith('.gz') for name in found) else None)(backups(daemon, 'sized/root.log')),
            20, 'compressed size backups')
        files = [backup_bodies(daemon, 'sized/root.log', name) for name in names]
        files.append(bodies(daemon.read_lines('sized/root.log')))
        assert [body for lines in files for body in lines] == sent
        line_size = len(daemon.read_lines('sized/root.log')[0].encode())
        for name in names:
            with gzip.open(os.path.join(daemon.path('sized'), name)) as stream:
                size = len(stream.read())
            assert 1000 - line_size < size <= 1000
        assert rotations(daemon) == len(names)


def test_backup_count_held_over_20_rotations_and_only_exact_names_are_candidates(tmp_path):
    facilities = ('[app]\nrotate = daily\nbackup_count = 1\n'
                  '[app:web]\nrotate = daily\nbackup_count = 3\n'
                  '[app:web.requests]\nrotate = daily\nbackup_count = 30\n')
    daemon = Loghogd(tmp_path, facilities, config={'compressor': {'format': 'gzip', 'level': '1'}})
    strangers = ['web.log.old', 'web.log.2020-01-01-00-00-00-000000.zip', 'gone.log.2020-01-01-00-00-00-000000.gz']
    os.makedirs(daemon.path('app'))
    for name in strangers:
        with open(daemon.path('app/' + name), 'w') as stream:
            stream.write('not a backup of web.log\n')
    with daemon:
        for number in range(20):
            send_and_wait(daemon, 'app', 'web %d' % number, 'app/web.log', 'web')
            send_and_wait(daemon, 'app', 'requests %d' % number, 'app/web.requests.log', 'web.requests')
            force_rotation(daemon, 'app/web.log', 'app/web.requests.log')
        web = settled_backups(daemon, 'app/web.log', '.gz', 3)
        requests = settled_backups(daemon, 'app/web.requests.log', '.gz', 20)
    assert [backup_bodies(daemon, 'app/web.log', name) for name in web] == [['web 17'], ['web 18'], ['web 19']]
    assert [backup_bodies(daemon, 'app/web.requests.log', name)[0] for name in requests] == [
        'requests %d' % number for number in range(20)]
    assert sorted(set(strangers) & set(os.listdir(daemon.path('app')))) == sorted(strangers)
    assert backups(daemon, 'app/root.log') == []


@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_each_compressor_makes_a_file_its_tool_decompresses_to_the_lines(tmp_path, tool):
    with Loghogd(tmp_path, '[app]\nrotate = daily\nbackup_count = 3\n',
                 config={'compressor': {'format': tool, 'level': '9'}}) as daemon:
        sent = ['%s line %d ☃' % (tool, number) for number in range(200)]
        daemon.send_tcp(b''.join(frame('app', 'root', body) for body in sent))
        daemon.wait_for_lines('app/root.log', len(sent))
        force_rotation(daemon, 'app/root.log')
        [name] = settled_backups(daemon, 'app/root.log', TOOLS[tool])
        stats = daemon.stats()
        assert stats['compressions'] >= 1 and stats['compression_failures'] == 0
    output = subprocess.run([tool, '-dc', daemon.path('app/' + name)], check=True, capture_output=True).stdout
    assert bodies(output.decode('utf-8').splitlines(keepends=True)) == sent


@pytest.mark.parametrize('missing', ['xz', 'zstd'])
def test_without_the_tool_on_path_gzip_is_used_and_said_once(tmp_path, missing):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool in ('gzip', 'bzip2'):
        os.symlink(shutil.which(tool), str(bin_dir / tool))
    (tmp_path / 'daemon').mkdir()
    with Loghogd(tmp_path / 'daemon', '[app]\nrotate = daily\nbackup_count = 5\n',
                 config={'compressor': {'format': missing}}, env={'PATH': str(bin_dir)}) as daemon:
        for number in range(2):
            send_and_wait(daemon, 'app', 'line %d' % number, 'app/root.log')
            force_rotation(daemon, 'app/root.log')
        names = settled_backups(daemon, 'app/root.log', '.gz', 2)
    assert [backup_bodies(daemon, 'app/root.log', name) for name in names] == [['line 0'], ['line 1']]
    assert daemon.output().count('%s is not on PATH' % missing) == 1


def test_overdue_daily_file_rotates_at_start_up_and_an_empty_one_does_not(tmp_path):
    daemon = Loghogd(tmp_path, '[app]\nrotate = daily\nbackup_count = 3\n[empty]\nrotate = daily\nbackup_count = 3\n')
    os.makedirs(daemon.path('app'))
    os.makedirs(daemon.path('empty'))
    with open(daemon.path('app/root.log'), 'w') as stream:
        stream.write('2020-01-01 00:00:00.000000 - host - written before the restart\n')
    open(daemon.path('empty/root.log'), 'w').close()
    two_days_ago = datetime.now(tz.tzlocal()).replace(microsecond=123456) - timedelta(days=2)
    write_state(daemon, {daemon.path('app/root.log'): two_days_ago, daemon.path('empty/root.log'): two_days_ago})
    with daemon:
        [name] = settled_backups(daemon, 'app/root.log')
        assert name == 'root.log.%s.xz' % backup_stamp(two_days_ago)
        assert backup_bodies(daemon, 'app/root.log', name) == ['written before the restart']
        assert backups(daemon, 'empty/root.log') == []
        send_and_wait(daemon, 'app', 'after the restart', 'app/root.log')
    with open(os.path.join(daemon.workdir, 'rotation-state.json'), encoding='utf-8') as stream:
        state = json.load(stream)['last_rotation']
    assert datetime.fromisoformat(state[daemon.path('empty/root.log')]) > two_days_ago + timedelta(days=1)
    assert bodies(daemon.read_lines('app/root.log')) == ['after the restart']


def test_start_up_finishes_what_a_crash_interrupted(tmp_path):
    daemon = Loghogd(tmp_path, '[app]\nrotate = daily\nbackup_count = 10\n')
    os.makedirs(daemon.path('app'))
    plain = daemon.path('app/root.log.2026-01-01-00-00-00-000000')
    done_twice = daemon.path('app/root.log.2026-01-02-00-00-00-000000')
    with open(plain, 'w') as stream:
        stream.write('2026-01-01 00:00:01.000000 - host - left plain\n')
    with open(daemon.path('app/root.log.2026-01-01-00-00-00-000000.xz.tmp'), 'wb') as stream:
        stream.write(b'half an archive')
    with open(done_twice, 'w') as stream:
        stream.write('2026-01-02 00:00:01.000000 - host - compressed before the kill\n')
    with lzma.open(done_twice + '.xz', 'wt') as stream:
        stream.write('2026-01-02 00:00:01.000000 - host - compressed before the kill\n')
    with daemon:
        names = settled_backups(daemon, 'app/root.log', count=2)
    assert [backup_bodies(daemon, 'app/root.log', name) for name in names] == [['left plain'],
                                                                                ['compressed before the kill']]
    assert 'start-up recovery: removed 2 leftover compressor files, compressing 1 backups' in daemon.output()


def test_max_age_deletes_old_backups_and_keeps_recent_ones(tmp_path):
    daemon = Loghogd(tmp_path, '[app]\nrotate = daily\nbackup_count = 10\nmax_age = 30d\n')
    os.makedirs(daemon.path('app'))
    now = datetime.now(tz.tzlocal())
    stamps = [(now - timedelta(days=days)).strftime('%Y-%m-%d-%H-%M-%S-%f') for days in (90, 60, 20, 2)]
    for stamp in stamps:
        with gzip.open(daemon.path('app/root.log.%s.gz' % stamp), 'wt') as stream:
            stream.write('%s - host - from %s\n' % (now.strftime('%Y-%m-%d %H:%M:%S.%f'), stamp))
    write_state(daemon, {daemon.path('app/root.log'): now})
    with open(daemon.path('app/root.log'), 'w') as stream:
        stream.write('%s - host - live\n' % now.strftime('%Y-%m-%d %H:%M:%S.%f'))
    with daemon:
        wait_for(lambda: len(backups(daemon, 'app/root.log')) == 3, 10, 'the oldest backup deleted')
        # 90 days ago ended 60 days ago: too old; 60 days ago ended 20 days ago: young enough.
        assert backups(daemon, 'app/root.log') == ['root.log.%s.gz' % stamp for stamp in stamps[1:]]
        assert daemon.read_lines('app/root.log')


def test_internal_log_rotates_and_is_compressed(tmp_path):
    with Loghogd(tmp_path, '[app]\nrotate = daily\nbackup_count = 3\n') as daemon:
        daemon.send_signal(signal.SIGUSR2)
        directory = os.path.dirname(daemon.internal_log)
        pattern = re.compile(r'loghogd\.log\.' + STAMP + r'\.xz\Z')
        [name] = wait_for(lambda: [n for n in os.listdir(directory) if pattern.match(n)], 20,
                          'a compressed internal log backup')
        with lzma.open(os.path.join(directory, name), 'rt') as stream:
            assert 'ready' in stream.read()
        wait_for(lambda: 'rotated ' in open(daemon.internal_log).read(), 10, 'the new internal log')


def test_a_reload_applies_new_backup_counts_and_leaves_removed_facilities_alone(tmp_path):
    before = '[app]\nrotate = daily\nbackup_count = 5\n[gone]\nrotate = daily\nbackup_count = 1\n'
    with Loghogd(tmp_path, before, config={'compressor': {'format': 'gzip', 'level': '1'}}) as daemon:
        for number in range(3):
            send_and_wait(daemon, 'app', 'app %d' % number, 'app/root.log')
            send_and_wait(daemon, 'gone', 'gone %d' % number, 'gone/root.log')
            force_rotation(daemon, 'app/root.log', 'gone/root.log')
        settled_backups(daemon, 'app/root.log', '.gz', 3)
        [gone_backup] = settled_backups(daemon, 'gone/root.log', '.gz', 1)
        send_and_wait(daemon, 'gone', 'still here', 'gone/root.log')
        daemon.write_facilities('[app]\nrotate = daily\nbackup_count = 1\n')
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_output('reloaded')
        send_and_wait(daemon, 'app', 'after the reload', 'app/root.log')
        force_rotation(daemon, 'app/root.log')
        [name] = settled_backups(daemon, 'app/root.log', '.gz', 1)
        assert backup_bodies(daemon, 'app/root.log', name) == ['after the reload']
        assert backups(daemon, 'gone/root.log') == [gone_backup]
        assert bodies(daemon.read_lines('gone/root.log')) == ['still here']


def test_thousands_of_overdue_host_files_rotate_over_many_passes_while_the_daemon_serves(tmp_path):
    """`-d` is ready once start-up work is planned; records and SIGTERM are handled mid-rotation; no line lost."""
    hosts = 2000
    daemon = Loghogd(tmp_path, '[perhost]\nrotate = daily\nbackup_count = 3\nfile_per_host = yes\n'
                               '[app]\nrotate = daily\nbackup_count = 3\n',
                     config={'compressor': {'format': 'gzip', 'level': '1'}})
    os.makedirs(daemon.path('perhost'))
    two_days_ago = time.time() - 2 * 86400
    for index in range(hosts):
        path = daemon.path('perhost/h%04d@root.log' % index)
        with open(path, 'w') as stream:
            stream.write('2020-01-01 00:00:00.000000 - h%04d - line of h%04d\n' % (index, index))
        os.utime(path, (two_days_ago, two_days_ago))
    started = daemon.start_detached()
    try:
        assert started.returncode == 0, started.stderr
        with open(daemon.internal_log, encoding='utf-8') as stream:
            assert 'rotating %d log files, 100 per loop pass' % hosts in stream.read()
        send_and_wait(daemon, 'app', 'served during the rotation', 'app/root.log')
    finally:
        daemon.stop()
    found: dict = {}
    for name in os.listdir(daemon.path('perhost')):
        live = name if name.endswith('.log') else name.split('.log.')[0] + '.log'
        lines = (daemon.read_lines('perhost/' + name) if name == live
                 else [] if name.endswith('.tmp') else backup_lines(daemon, 'perhost/' + live, name))
        found.setdefault(live, []).extend(bodies(lines))
    lost_or_doubled = [index for index in range(hosts) if found['h%04d@root.log' % index] != ['line of h%04d' % index]]
    assert lost_or_doubled == []
