"""A real unprivileged account for the privilege tests, and a loghogd it can run.

The suite's interpreter and checkout may sit under a directory only root
can read (pyenv under /root, a clone in a 0700 directory); CI runs the
suite as root there. So the account gets its own copy: the project and
the suite's installed packages in a world-readable temporary directory,
run by a system python3 of the same version, or else installed with pip
into a fresh virtual environment of that python3.
"""

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import Dict, List, Optional, Tuple

from tests.support.daemon import LOGHOGD, REPO

TEST_USER = 'loghogtest'
SYSTEM_PYTHONS = ('/usr/bin/python3', '/usr/local/bin/python3')
Command = Tuple[List[str], Dict[str, str]]


def ensure_test_user() -> pwd.struct_passwd:
    """The unprivileged account TEST_USER, created (no home, no shell) when missing; needs root."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(['useradd', '--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin',
                        TEST_USER], check=True, capture_output=True, text=True, timeout=60)
        return pwd.getpwnam(TEST_USER)


def open_directory() -> str:
    """A fresh 0755 directory under /tmp that any account can reach."""
    directory = tempfile.mkdtemp(prefix='loghogd-user-', dir='/tmp')
    os.chmod(directory, 0o755)
    return directory


def run_as(user: pwd.struct_passwd, command: List[str], **options: object) -> subprocess.CompletedProcess:
    """`command` as `user` with its own group only, from /."""
    options.setdefault('timeout', 60)
    return subprocess.run(command, capture_output=True, text=True, user=user.pw_uid, group=user.pw_gid,
                          extra_groups=[], cwd='/', **options)


def _runs(user: pwd.struct_passwd, command: Command) -> bool:
    try:
        probe = run_as(user, command[0] + ['--version'], env=command[1])
    except OSError:
        return False
    return probe.returncode == 0


def loghogd_for(user: pwd.struct_passwd, directory: str) -> Command:
    """(command prefix, environment) with which `user` runs this checkout's loghogd.

    The suite's own loghogd when `user` can run it; else a copy made in
    `directory` (which `user` must be able to read).
    """
    own = ([LOGHOGD], dict(os.environ))
    if _runs(user, own):
        return own
    site = os.path.join(directory, 'site')
    _copy_packages(site)
    problems = []
    for python in SYSTEM_PYTHONS:
        command = _same_version_python(python, site) or _fresh_environment(python, directory, problems)
        if command is not None and _runs(user, command):
            return command
    raise AssertionError('user %s can run no copy of loghogd: %s' % (user.pw_name, '; '.join(problems) or
                                                                      'no system python3 in %s' % (SYSTEM_PYTHONS,)))


def _copy_packages(site: str) -> None:
    """The suite's installed packages and this checkout's, readable by everyone."""
    ignore = shutil.ignore_patterns('__pycache__', '__editable__*', 'loghogd*', 'loghog-*', 'loghog')
    for installed in dict.fromkeys((sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib'])):
        shutil.copytree(installed, site, ignore=ignore, dirs_exist_ok=True)
    for package in ('loghogd', 'loghog'):
        shutil.copytree(os.path.join(REPO, package), os.path.join(site, package),
                        ignore=shutil.ignore_patterns('__pycache__'))
    for top, directories, files in os.walk(os.path.dirname(site)):
        for name in [top] + [os.path.join(top, entry) for entry in files]:
            os.chmod(name, os.stat(name).st_mode | 0o444 | (0o111 if os.path.isdir(name) else 0))


def _same_version_python(python: str, site: str) -> Optional[Command]:
    """`python` with the copied packages, when it is the suite's Python version (binary modules match)."""
    try:
        version = subprocess.run([python, '-c', 'import sys; print(sys.version_info[:2])'], capture_output=True,
                                 text=True, timeout=60).stdout.strip()
    except OSError:
        return None
    if version != str(tuple(sys.version_info[:2])):
        return None
    return [python, '-m', 'loghogd.main'], dict(os.environ, PYTHONPATH=site)


def _fresh_environment(python: str, directory: str, problems: List[str]) -> Optional[Command]:
    """A virtual environment of `python` with this checkout installed by pip."""
    if not os.path.exists(python):
        return None
    environment = os.path.join(directory, 'venv-%s' % os.path.basename(os.path.dirname(python)))
    source = os.path.join(directory, 'source')
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns('.venv*', '.git', '__pycache__'),
                    dirs_exist_ok=True)
    for step in ([python, '-m', 'venv', environment],
                 [os.path.join(environment, 'bin', 'pip'), 'install', '-q', '--disable-pip-version-check', source]):
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            problems.append('%s: %s' % (' '.join(step[:3]), done.stderr.strip()[-500:]))
            return None
    subprocess.run(['chmod', '-R', 'a+rX', directory], check=True)
    return [os.path.join(environment, 'bin', 'loghogd')], dict(os.environ)
