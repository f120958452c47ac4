"""The Debian package on Debian 13 (trixie) and its Python 3.13, in a chroot.

Builds the .deb inside a trixie chroot (tests/deb/chroot.py: an overlay on
a debootstrap cached in /var/cache/loghogd-tests), installs it with apt-get
so that trixie's python3-cryptography, -daemon, -croniter and -lockfile
and the recommended python3-msgspec and python3-isal come from Debian, starts it with its
init script on free ports, and sends records over TCP, UDP and TLS. Then
the client's tests run under trixie's Python 3.13 against the packaged
loghogd. In a second chroot, the "From a clone" commands of docs/debian.md
install loghogd into /opt/loghogd with pip, and the commands of the systemd
unit for that install (systemd/loghogd.service) start and reload it. The
first run makes the chroot (a few minutes); later runs reuse it.
"""

import json
import os
import signal
import shutil
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.deb.chroot import LIBRARY_PROBE, REPO, Chroot, assert_libraries
from tests.deb.test_deb import (APP, copy_checkout, free_ports, listen_on, process_name, send_tcp, send_tls,
                                send_udp, wait_for_text)
from tests.support.daemon import frame, wait_for

pytestmark = [pytest.mark.deb, pytest.mark.slow]

RELEASE = 'trixie'
PYTHON = 'python3.13'
SOURCE = '/build/loghogd'
TESTS = '/srv/loghogd-tests'
# Need the deployed 0.7 client's venv, which the chroot does not have.
NEEDS_CLIENT07 = ('tests/test_handler.py::test_emit_benchmark_runs_and_prints_every_handler',
                  'tests/test_handler.py::test_constructor_takes_the_07_arguments_in_the_07_order',
                  'tests/test_handler.py::test_same_records_as_the_real_07_client',
                  'tests/test_handler.py::test_client_distribution_is_the_loghog_package_alone_with_no_dependencies',
                  'tests/e2e/test_client.py::test_a_07_client_beside_an_acknowledged_one_never_has_a_byte_to_read')
CLIENT_TESTS_TIMEOUT = 1200


@pytest.fixture(scope='module')
def trixie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    """A trixie chroot with the .deb built in it and installed with apt-get."""
    if os.geteuid() != 0:
        pytest.skip('the trixie package test mounts a chroot: run it as root')
    for tool in ('chroot', 'mount', 'git'):
        if shutil.which(tool) is None:
            pytest.skip('the trixie package test needs %s, which this machine lacks' % tool)
    with Chroot(RELEASE, tmp_path_factory.mktemp('trixie')) as chroot:
        copy_checkout(chroot.path(SOURCE))
        chroot.run('apt-get -q -y build-dep %s' % SOURCE, timeout=600)
        chroot.run('cd %s && dpkg-buildpackage -us -uc -b' % SOURCE, timeout=600)
        chroot.run('apt-get -q -y install /build/loghogd_*_all.deb', timeout=600)
        yield chroot


def test_the_package_installs_with_python_313_msgspec_and_isal(trixie: Chroot) -> None:
    assert trixie.run('python3 --version').stdout.startswith('Python 3.13.'), 'trixie has another Python'
    for package in ('python3-msgspec', 'python3-isal'):
        state = trixie.run("dpkg-query -W -f='${db:Status-Abbrev}' " + package, check=False).stdout
        assert state.strip() == 'ii', 'apt-get did not install the recommended %s: %r' % (package, state)
    module = trixie.run('cd / && python3 -c "import loghogd, msgspec, isal; print(loghogd.__file__)"').stdout
    assert module.startswith('/usr/lib/python3/dist-packages/loghogd/'), module


def test_the_daemon_under_python_313_serves_tcp_udp_and_tls(trixie: Chroot) -> None:
    tcp_port, tls_port = free_ports()
    listen_on(trixie.path('/etc/loghogd/loghogd.conf'), tcp_port, tls_port)
    trixie.run('/etc/init.d/loghogd start', timeout=60)
    try:
        pidfile = trixie.path('/run/loghogd/loghogd.pid')
        pid = wait_for(lambda: pidfile.exists() and int(pidfile.read_text()), 15, 'the PID file')
        assert process_name(pid) == 'loghogd'
        assert os.path.realpath('/proc/%d/exe' % pid).endswith('/' + PYTHON), 'loghogd runs under another Python'

        marker = uuid.uuid4().hex
        trixie.run('loghog-client-cert trixie-client --out /root/trixie-client.pem')
        ca_cert = trixie.path('/etc/loghogd/certs/loghog-ca.cert')
        send_tcp(tcp_port, frame(APP, body='tcp ' + marker))
        send_udp(tcp_port, frame(APP, body='udp ' + marker))
        send_tls(tls_port, ca_cert, trixie.path('/root/trixie-client.pem'),
                 frame(APP, module='web.requests', body='tls ' + marker))
        logdir = trixie.path('/var/log/loghogd/' + APP)
        wait_for_text(logdir / 'root.log', 'tcp ' + marker)
        wait_for_text(logdir / 'root.log', 'udp ' + marker)
        wait_for_text(logdir / 'web.requests.log', 'tls ' + marker)

        status = json.loads(trixie.run('loghogd --status --json -c /etc/loghogd/loghogd.conf').stdout)
        assert status['accepted_by_app'] == {APP: 3} and status['rejected'] == 0, status
        assert_libraries(trixie.run(LIBRARY_PROBE).stdout, status, RELEASE)
    finally:
        trixie.run('/etc/init.d/loghogd stop', timeout=60, check=False)
    internal_log = trixie.path('/var/log/loghogd/loghogd.log').read_text()
    assert 'Traceback' not in internal_log and ' ERROR ' not in internal_log, internal_log


def test_the_client_tests_pass_under_python_313_against_the_packaged_daemon(trixie: Chroot) -> None:
    """The client's test modules with the packaged loghog and loghogd (not the checkout's)."""
    for name in ('tests', 'pytest.ini'):
        source, target = Path(trixie.path(SOURCE)) / name, trixie.path(TESTS) / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy(source, target)
    where = trixie.run('cd %s && python3 -c "import loghog; print(loghog.__file__)"' % TESTS).stdout
    assert where.startswith('/usr/lib/python3/dist-packages/loghog/'), where
    deselect = ' '.join('--deselect ' + test for test in NEEDS_CLIENT07)
    result = trixie.run('cd %s && LOGHOGD=/usr/sbin/loghogd python3 -m pytest -q -p no:cacheprovider %s'
                        ' tests/test_handler.py tests/e2e/test_client.py' % (TESTS, deselect),
                        timeout=CLIENT_TESTS_TIMEOUT, check=False)
    assert result.returncode == 0, 'the client tests failed under Python 3.13:\n' + result.stdout[-8000:]
    assert ' passed' in result.stdout and ' skipped' not in result.stdout, result.stdout[-3000:]


def clone_install_commands() -> List[str]:
    """The shell lines of docs/debian.md's "From a clone", less sudo and systemctl (no systemd in a chroot)."""
    section = (REPO / 'docs' / 'debian.md').read_text().split('## From a clone', 1)[1]
    block = section.split('```sh\n', 1)[1].split('```', 1)[0]
    return [line.replace('sudo ', '') for line in block.splitlines()
            if 'systemd/' not in line and 'systemctl' not in line]


def unit_commands(key: str) -> List[str]:
    """The command lines of `key` (ExecStartPre, ExecStart, ExecReload) in the unit for a clone."""
    unit = (REPO / 'systemd' / 'loghogd.service').read_text().splitlines()
    return [line.split('=', 1)[1] for line in unit if line.startswith(key + '=')]


@pytest.fixture
def clone_chroot(tmp_path: Path) -> Iterator[Chroot]:
    if os.geteuid() != 0:
        pytest.skip('the trixie clone test mounts a chroot: run it as root')
    with Chroot(RELEASE, tmp_path) as chroot:
        copy_checkout(chroot.path(SOURCE))
        yield chroot


def test_a_clone_installed_as_the_docs_say_runs_under_the_units_commands(clone_chroot: Chroot) -> None:
    clone_chroot.run('set -e\ncd %s\n%s' % (SOURCE, '\n'.join(clone_install_commands())), timeout=900)
    tcp_port, tls_port = free_ports()
    listen_on(clone_chroot.path('/etc/loghogd/loghogd.conf'), tcp_port, tls_port)
    for command in unit_commands('ExecStartPre') + unit_commands('ExecStart'):
        clone_chroot.run(command, timeout=60)
    pidfile = clone_chroot.path('/run/loghogd/loghogd.pid')
    pid = wait_for(lambda: pidfile.exists() and int(pidfile.read_text()), 15, 'the PID file')
    assert '/opt/loghogd/bin/loghogd' in Path('/proc/%d/cmdline' % pid).read_text(), 'not the clone\'s loghogd'
    try:
        marker = uuid.uuid4().hex
        send_tcp(tcp_port, frame(APP, body='clone ' + marker))
        wait_for_text(clone_chroot.path('/var/log/loghogd/%s/root.log' % APP), 'clone ' + marker)
        for command in unit_commands('ExecReload'):
            clone_chroot.run(command.replace('$MAINPID', str(pid)), timeout=60)
        wait_for_text(clone_chroot.path('/var/log/loghogd/loghogd.log'), 'reloaded')
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: process_name(pid) is None, 15, 'loghogd to exit')
