"""--check-config as an operator runs it: every problem in one run, including what the files point at."""

import os
import subprocess

from tests.support.daemon import Loghogd


def check(daemon: Loghogd, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run(daemon.command('--check-config'), capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def test_what_the_config_points_at_is_checked_and_every_problem_listed(tmp_path):
    garbage = tmp_path / 'ca.pem'
    garbage.write_text('not a certificate\n')
    not_a_directory = tmp_path / 'plain-file'
    not_a_directory.write_text('')
    facilities = ('[app]\nrotate = daily\nbackup_count = 1\npost_rotate = /nonexistent/upload --now\n'
                  '[app:web]\nrotate = daily\nbackup_count = 1\n'
                  '[other]\nrotate = daily\nbackup_count = 1\npost_rotate = no-such-uploader-here\n')
    daemon = Loghogd(tmp_path, facilities, config={
        'main': {'workdir': str(not_a_directory / 'lib'), 'user': 'no-such-user-here'},
        'server': {'listen_ipv4_ssl': '127.0.0.1:0', 'pemfile': str(tmp_path / 'missing.pem'),
                   'cacert': str(garbage)}})
    checked = check(daemon)
    assert checked.returncode == 2
    problems = [line for line in checked.stderr.splitlines() if not line.endswith('found')]
    assert len(problems) == 6, checked.stderr
    expected = [('[server] pemfile', 'no such file'), ('[server] cacert', 'cannot be loaded'),
                ('[main] user', 'no such user'), ('[main] workdir', 'is not a directory'),
                ('[app:root] post_rotate', '/nonexistent/upload: no such'),
                ('[other:root] post_rotate', 'no-such-uploader-here is not on PATH')]
    for (where, what), line in zip(expected, problems):
        assert where in line and what in line, line
    assert checked.stderr.splitlines()[-1] == 'loghogd: 6 problems found'


def test_mistakes_in_both_files_are_all_listed_with_a_schedule_hint(tmp_path):
    facilities = ('[app]\nrotate = dayly\nbackup_count = 1\n'
                  '[shop]\nrotate = daily\nbackup_count = many\nfile_group = no-such-group-here\n')
    daemon = Loghogd(tmp_path, facilities, config={'server': {'max_connections': '0', 'idle_timout': '5'},
                                                    'compressor': {'level': '99'}})
    checked = check(daemon)
    assert checked.returncode == 2
    lines = checked.stderr.splitlines()
    assert lines[-1] == 'loghogd: 6 problems found', checked.stderr
    text = checked.stderr
    for words in ("[server] max_connections: 0 is out of range", '[server] idle_timout: unknown key (did you '
                  'mean idle_timeout?', '[compressor] level: 99 is out of range',
                  "[app] rotate: 'dayly': unknown schedule name, did you mean daily",
                  '[shop] backup_count', "[shop] file_group: no group 'no-such-group-here'"):
        assert words in text, text


def test_a_missing_compressor_is_a_warning_and_the_config_valid(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    os.symlink('/bin/gzip', str(bin_dir / 'gzip'))
    daemon = Loghogd(tmp_path, '[app]\nrotate = daily\nbackup_count = 1\n',
                     config={'compressor': {'format': 'zstd'}})
    checked = check(daemon, {'PATH': str(bin_dir)})
    assert checked.returncode == 0, checked.stderr
    assert 'warning' in checked.stderr and 'zstd: not on PATH; rotated logs would be compressed with gzip' in (
        checked.stderr)
