"""Per-facility file_mode, dir_mode and file_group, checked with stat on what a real loghogd made."""

import grp
import os
import stat
import subprocess

import pytest

from tests.e2e.test_rotation import force_rotation, send_and_wait, settled_backups
from tests.support.daemon import Loghogd, frame

GROUP = 'loghogtest-devs'


@pytest.fixture(scope='module')
def devs_gid() -> int:
    """A real group, made when missing (needs root: only root can give a file to a group it is not in)."""
    if os.geteuid() != 0:
        pytest.skip('giving files to another group needs root; this test runs as uid %d' % os.geteuid())
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        subprocess.run(['groupadd', '--system', GROUP], check=True, capture_output=True, timeout=60)
        return grp.getgrnam(GROUP).gr_gid


def mode_and_group(path: str) -> tuple:
    status = os.stat(path, follow_symlinks=False)
    return oct(stat.S_IMODE(status.st_mode)), status.st_gid


def test_modes_and_group_hold_from_creation_through_rotation_and_compression(tmp_path, devs_gid):
    facilities = ('[shop]\nrotate = daily\nbackup_count = 3\nfile_mode = 0640\ndir_mode = 0750\n'
                  'file_group = %s\n[shop:web]\nrotate = daily\nbackup_count = 3\n'
                  '[public]\nrotate = daily\nbackup_count = 3\nfile_mode = 0644\ndir_mode = 0755\n'
                  '[private]\nrotate = daily\nbackup_count = 3\n' % GROUP)
    with Loghogd(tmp_path, facilities, config={'compressor': {'format': 'zstd', 'level': '3'}}) as daemon:
        logs = ['shop/root.log', 'shop/web.log', 'public/root.log', 'private/root.log']
        for relative in logs:
            app, module = relative.split('/')[0], relative.split('/')[1][:-4]
            send_and_wait(daemon, app, 'first in %s' % relative, relative, module)
        live = {relative: mode_and_group(daemon.path(relative)) for relative in logs}
        force_rotation(daemon, *logs)
        backups = {relative: settled_backups(daemon, relative, '.zst')[0] for relative in logs}
        daemon.send_tcp(frame('shop', 'root', 'after rotation'))
        daemon.wait_for_lines('shop/root.log', 1)
    assert live == {'shop/root.log': ('0o640', devs_gid), 'shop/web.log': ('0o640', devs_gid),
                    'public/root.log': ('0o644', 0), 'private/root.log': ('0o640', 0)}
    directories = {app: mode_and_group(daemon.path(app)) for app in ('shop', 'public', 'private')}
    assert directories == {'shop': ('0o750', devs_gid), 'public': ('0o755', 0), 'private': ('0o750', 0)}
    compressed = {relative: mode_and_group(os.path.join(os.path.dirname(daemon.path(relative)), name))
                  for relative, name in backups.items()}
    assert compressed == live
    assert mode_and_group(daemon.path('shop/root.log')) == ('0o640', devs_gid)
