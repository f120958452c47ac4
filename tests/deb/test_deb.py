"""The Debian package as an operator meets it: build, install, serve, reload, purge.

Builds the .deb with dpkg-buildpackage from a copy of the checkout (tracked
and new files, nothing ignored), installs it with apt-get so that its
dependencies come from Debian, runs it through `service` (the init script
when systemd is not PID 1) on free ports written into its loghogd.conf (so
that `scripts/run-dev` on 5566/5577 does not stand in the way), then
removes and purges it. Needs root and apt; skipped, with the reason, where either is
missing. Whatever fails, the finalizer stops the daemon and purges.
"""

import grp
import hashlib
import json
import os
import re
import pwd
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.deb.chroot import LIBRARY_PROBE, assert_libraries
from tests.support.daemon import frame, wait_for

pytestmark = pytest.mark.deb

REPO = Path(__file__).resolve().parents[2]
PACKAGE = 'loghogd'
USER = 'loghog'
APP = 'my-first-app'
NEW_APP = 'deb-reload-app'
ETC = Path('/etc/loghogd')
CERTS = ETC / 'certs'
LOGDIR = Path('/var/log/loghogd')
WORKDIR = Path('/var/lib/loghogd')
RUNDIR = Path('/run/loghogd')
PIDFILE = RUNDIR / 'loghogd.pid'
# Left by this test's installs (purge removes it): tells its own leftovers,
# from a run killed before its finalizer, from an administrator's install.
TEST_MARKER = WORKDIR / '.installed-by-test-deb'
# Debian's own tools and Python only: a python3 earlier on PATH (pyenv, a venv) must not build the package.
APT_ENV = dict(os.environ, DEBIAN_FRONTEND='noninteractive', PATH='/usr/sbin:/usr/bin:/sbin:/bin')
BUILD_TIMEOUT = 300
APT_TIMEOUT = 300
SERVICE_TIMEOUT = 60


def run(command: List[str], timeout: float = SERVICE_TIMEOUT, check: bool = True,
        cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a command, bounded; on failure the assertion shows its output."""
    try:
        result = subprocess.run(command, cwd=cwd, env=APT_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        output = expired.output.decode(errors='replace') if expired.output else ''
        raise AssertionError('%s did not finish within %d s (for `service ... start`: a loghogd -d that never'
                             ' detaches, or that keeps stdout open):\n%s' % (' '.join(command), timeout, output))
    if check:
        assert result.returncode == 0, '%s exited %d:\n%s' % (' '.join(command), result.returncode, result.stdout)
    return result


def package_state() -> str:
    """dpkg's status of the package ('' when dpkg never heard of it)."""
    result = run(['dpkg-query', '-W', '-f=${db:Status-Abbrev}', PACKAGE], check=False)
    return result.stdout.strip() if result.returncode == 0 else ''


def release_codename() -> str:
    """This machine's Debian release: bookworm, trixie."""
    return re.search(r'(?m)^VERSION_CODENAME=(\w+)$', Path('/etc/os-release').read_text()).group(1)


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(('127.0.0.1', port)) == 0


def free_ports() -> Tuple[int, int]:
    """A port free for TCP and UDP on 127.0.0.1, and another free for TCP (TLS)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket() as tls:
            tcp.bind(('127.0.0.1', 0))
            tls.bind(('127.0.0.1', 0))
            try:
                udp.bind(('127.0.0.1', tcp.getsockname()[1]))
            except OSError:
                continue
            return tcp.getsockname()[1], tls.getsockname()[1]


def listen_on(config: Path, tcp_port: int, tls_port: int) -> None:
    """Point the packaged loghogd.conf at other ports: 5566/5577 may be a development server's."""
    text = config.read_text()
    for key, port in (('default_port', tcp_port), ('default_port_ssl', tls_port)):
        text, count = re.subn(r'(?m)^%s = \d+$' % key, '%s = %d' % (key, port), text)
        assert count == 1, 'no single %r in %s' % (key, config)
    config.write_text(text)


def apt_get(*arguments: str) -> Optional[str]:
    """apt-get, retried once after `apt-get update` (fresh machines have no lists); its error output, or None."""
    command = ['apt-get', '-y', '-q', *arguments]
    result = run(command, timeout=APT_TIMEOUT, check=False)
    if result.returncode != 0:
        run(['apt-get', 'update', '-q'], timeout=APT_TIMEOUT, check=False)
        result = run(command, timeout=APT_TIMEOUT, check=False)
    return None if result.returncode == 0 else result.stdout[-2000:]


def skip_unless_usable() -> None:
    """Skip, saying why, where this machine cannot build and install packages."""
    if os.geteuid() != 0:
        pytest.skip('the Debian package test installs a system package: run it as root')
    for tool in ('apt-get', 'dpkg', 'dpkg-query', 'service', 'start-stop-daemon', 'git'):
        if shutil.which(tool) is None:
            pytest.skip('the Debian package test needs %s, which this machine lacks' % tool)
    if package_state() and TEST_MARKER.exists():
        Installation().cleanup()
    if package_state():
        pytest.skip('loghogd is already known to dpkg here (%s); refusing to replace or purge it'
                    % package_state())


def copy_checkout(destination: Path) -> None:
    """The files of a clean checkout: tracked plus new ones, nothing git ignores."""
    listing = run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO)
    for name in filter(None, listing.stdout.split('\0')):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope='module')
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb built from a copy of this checkout with the standard tools."""
    skip_unless_usable()
    build = tmp_path_factory.mktemp('deb')
    source = build / PACKAGE
    copy_checkout(source)
    error = apt_get('build-dep', str(source))
    if error is not None:
        pytest.skip('apt-get cannot install the build dependencies:\n' + error)
    run(['dpkg-buildpackage', '-us', '-uc', '-b'], cwd=source, timeout=BUILD_TIMEOUT)
    debs = sorted(build.glob('loghogd_*_all.deb'))
    assert len(debs) == 1, 'dpkg-buildpackage made %s' % debs
    return debs[0]


def test_lintian_reports_no_errors(deb: Path) -> None:
    if shutil.which('lintian') is None and apt_get('install', '--no-install-recommends', 'lintian') is not None:
        pytest.skip('lintian is missing and apt-get cannot install it')
    result = run(['lintian', '--tag-display-limit', '0', str(deb)], timeout=BUILD_TIMEOUT, check=False)
    errors = [line for line in result.stdout.splitlines() if line.startswith('E: ')]
    assert not errors, 'lintian errors:\n' + result.stdout


class Installation:
    """What the scenario started, so that the finalizer can undo it."""

    def __init__(self) -> None:
        self.pids: List[int] = []

    def cleanup(self) -> None:
        if Path('/etc/init.d/loghogd').exists():
            run(['/etc/init.d/loghogd', 'stop'], check=False)
        if package_state():
            run(['apt-get', 'purge', '-y', '-q', PACKAGE], timeout=APT_TIMEOUT, check=False)
        for pid in self.pids:
            if process_name(pid) == PACKAGE:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def installation(deb: Path) -> Iterator[Installation]:
    """The package installed with apt-get; stopped and purged afterwards, whatever happens."""
    installed = Installation()
    try:
        error = apt_get('install', str(deb))
        assert error is None, 'apt-get install %s failed:\n%s' % (deb, error)
        TEST_MARKER.touch()
        yield installed
    finally:
        installed.cleanup()


def process_name(pid: int) -> Optional[str]:
    try:
        return Path('/proc/%d/comm' % pid).read_text().strip()
    except OSError:
        return None


def process_uid(pid: int) -> Optional[int]:
    """The real uid of a process, None once it is gone."""
    try:
        return Path('/proc/%d' % pid).stat().st_uid
    except OSError:
        return None


def daemon_pid() -> int:
    """The PID in the PID file, once that process runs as loghogd."""
    def running() -> Optional[int]:
        try:
            pid = int(PIDFILE.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_name(pid) == PACKAGE else None
    return wait_for(running, timeout=15, what='a running loghogd in %s' % PIDFILE)


def processes_named(name: str) -> List[int]:
    return [int(entry) for entry in os.listdir('/proc') if entry.isdigit() and process_name(int(entry)) == name]


def owner_and_mode(path: Path) -> str:
    info = path.stat()
    return '%s:%s %04o' % (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name,
                           stat.S_IMODE(info.st_mode))


def digests(paths: List[Path]) -> Dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def send_tcp(port: int, *frames: bytes) -> None:
    with socket.create_connection(('127.0.0.1', port), timeout=10) as connection:
        connection.sendall(b''.join(frames))


def send_udp(port: int, payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(payload, ('127.0.0.1', port))


def send_tls(port: int, ca_cert: Path, client_pem: Path, *frames: bytes) -> None:
    """Mutual TLS as a client would: verify the server against the packaged CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    context.load_cert_chain(str(client_pem))
    with socket.create_connection(('127.0.0.1', port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname='localhost') as connection:
            connection.sendall(b''.join(frames))


def wait_for_text(path: Path, text: str, resend: Optional[Callable[[], None]] = None) -> str:
    """The file's content once it holds `text`; `resend` is called on every poll."""
    def landed() -> Optional[str]:
        if resend is not None:
            resend()
        try:
            content = path.read_text()
        except FileNotFoundError:
            return None
        return content if text in content else None
    return wait_for(landed, timeout=15, what='%r in %s' % (text, path), interval=0.2)


def service(action: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(['service', PACKAGE, action], check=check)


def assert_installed_layout() -> None:
    for path in ('/usr/sbin/loghogd', '/usr/bin/loghog-server-cert', '/usr/bin/loghog-client-cert',
                 '/etc/init.d/loghogd', '/lib/systemd/system/loghogd.service',
                 '/usr/share/man/man8/loghogd.8.gz', '/usr/share/man/man8/loghog-server-cert.8.gz',
                 '/usr/share/man/man8/loghog-client-cert.8.gz'):
        assert Path(path).exists(), path
    conffiles = run(['dpkg-query', '-W', '-f=${Conffiles}', PACKAGE]).stdout
    for conffile in ('/etc/loghogd/loghogd.conf', '/etc/loghogd/facilities.conf', '/etc/init.d/loghogd'):
        assert conffile in conffiles, conffiles
    module = run(['/usr/bin/python3', '-c', 'import loghogd, loghog.protocol; print(loghogd.__file__)'],
                 cwd=Path('/')).stdout
    assert module.startswith('/usr/lib/python3/dist-packages/loghogd/'), module
    user = pwd.getpwnam(USER)
    assert user.pw_uid < 1000 and user.pw_dir == str(WORKDIR), user
    assert grp.getgrgid(user.pw_gid).gr_name == USER
    assert owner_and_mode(LOGDIR) == 'loghog:adm 2750'
    assert owner_and_mode(WORKDIR) == 'loghog:loghog 0750'
    assert owner_and_mode(CERTS) == 'root:loghog 0750'
    assert owner_and_mode(CERTS / 'loghog-ca.key') == 'root:root 0600'
    assert owner_and_mode(CERTS / 'loghog-server.pem') == 'root:loghog 0640'
    assert owner_and_mode(CERTS / 'loghog-ca.cert').endswith('0644')


def test_package_installs_serves_reloads_and_purges(installation: Installation, deb: Path,
                                                    tmp_path: Path) -> None:
    assert_installed_layout()
    certificates = digests([CERTS / 'loghog-ca.key', CERTS / 'loghog-ca.cert', CERTS / 'loghog-server.pem'])
    run(['dpkg', '-i', str(deb)], timeout=APT_TIMEOUT)
    assert digests(list(certificates)) == certificates, 'reinstalling replaced the certificates'
    ca_files = [CERTS / 'loghog-ca.key', CERTS / 'loghog-ca.cert']
    for path in (CERTS / 'loghog-server.pem', CERTS / 'loghog-ca.crl'):
        path.unlink()
    run(['dpkg-reconfigure', '-f', 'noninteractive', PACKAGE])
    assert digests(ca_files) == {path: certificates[path] for path in ca_files}, 'configure replaced the CA'
    assert owner_and_mode(CERTS / 'loghog-server.pem') == 'root:loghog 0640', 'no new server pem for the CA'
    assert (CERTS / 'loghog-ca.crl').exists(), 'configure did not make the missing CRL'

    if service('status', check=False).returncode == 0:
        service('stop')  # started by the install where no policy-rc.d forbids it
    assert service('status', check=False).returncode != 0
    tcp_port, tls_port = free_ports()
    listen_on(ETC / 'loghogd.conf', tcp_port, tls_port)
    service('start')
    pid = daemon_pid()
    installation.pids.append(pid)
    assert process_uid(pid) == pwd.getpwnam(USER).pw_uid, 'loghogd kept root instead of running as loghog'
    assert service('status').returncode == 0
    assert port_in_use(tcp_port) and port_in_use(tls_port), 'start returned before the ports accept'

    marker = uuid.uuid4().hex
    client_pem = tmp_path / 'deb-client.pem'
    run(['loghog-client-cert', 'deb-client', '--out', str(client_pem)])
    send_tcp(tcp_port, frame(APP, body='tcp ' + marker))
    send_udp(tcp_port, frame(APP, body='udp ' + marker))
    send_tls(tls_port, CERTS / 'loghog-ca.cert', client_pem, frame(APP, module='web.requests', body='tls ' + marker))
    wait_for_text(LOGDIR / APP / 'root.log', 'tcp ' + marker)
    wait_for_text(LOGDIR / APP / 'root.log', 'udp ' + marker)
    wait_for_text(LOGDIR / APP / 'web.requests.log', 'tls ' + marker)
    status = json.loads(run(['/usr/sbin/loghogd', '--status', '--json', '-c', str(ETC / 'loghogd.conf')]).stdout)
    assert status['accepted_by_app'] == {APP: 3}, status
    assert_libraries(run(['/bin/sh', '-c', LIBRARY_PROBE]).stdout, status, release_codename())
    assert owner_and_mode(LOGDIR / APP) == 'loghog:adm 2750'
    for name in ('root.log', 'web.requests.log'):
        assert owner_and_mode(LOGDIR / APP / name) == 'loghog:adm 0640'

    # The daemon handles one stream in order: once the record after it has
    # landed, the record for the unknown app has been refused.
    send_tcp(tcp_port, frame(NEW_APP, body='before reload ' + marker), frame(APP, body='fence ' + marker))
    wait_for_text(LOGDIR / APP / 'root.log', 'fence ' + marker)
    assert not (LOGDIR / NEW_APP).exists(), 'a record for an unconfigured app was written'
    with open(ETC / 'facilities.conf', 'a') as facilities:
        facilities.write('\n[%s]\nrotate = daily\nbackup_count = 2\n' % NEW_APP)
    service('reload')
    wait_for_text(LOGDIR / NEW_APP / 'root.log', 'after reload ' + marker,
                  resend=lambda: send_tcp(tcp_port, frame(NEW_APP, body='after reload ' + marker)))
    assert daemon_pid() == pid, 'reload restarted the daemon instead of signalling it'

    with open(ETC / 'facilities.conf', 'a') as facilities:
        facilities.write('\n[deb-broken-app]\nbackup_count = 2\n')
    refused = service('reload', check=False)
    assert refused.returncode != 0 and 'facilities.conf' in refused.stdout, refused.stdout
    assert daemon_pid() == pid, 'a broken reload stopped the daemon'
    lines = (ETC / 'facilities.conf').read_text().splitlines()
    (ETC / 'facilities.conf').write_text('\n'.join(lines[:-3]) + '\n')

    service('restart')
    restarted = daemon_pid()
    installation.pids.append(restarted)
    assert restarted != pid
    send_tcp(tcp_port, frame(APP, body='restarted ' + marker))
    wait_for_text(LOGDIR / APP / 'root.log', 'restarted ' + marker)

    service('stop')
    wait_for(lambda: process_name(restarted) is None, timeout=15, what='loghogd to exit')
    assert not PIDFILE.exists(), 'the PID file outlived the daemon'
    assert not port_in_use(tcp_port)
    assert service('status', check=False).returncode != 0
    internal_log = (LOGDIR / 'loghogd.log').read_text()
    assert owner_and_mode(LOGDIR / 'loghogd.log') == 'loghog:adm 0640'
    assert 'Traceback' not in internal_log and ' ERROR ' not in internal_log, internal_log

    loghog_uid = pwd.getpwnam(USER).pw_uid
    run(['apt-get', 'remove', '-y', '-q', PACKAGE], timeout=APT_TIMEOUT)
    assert (LOGDIR / APP / 'root.log').exists(), 'remove without purge deleted the logs'
    assert (CERTS / 'loghog-ca.key').exists(), 'remove without purge deleted the CA'
    assert pwd.getpwnam(USER).pw_uid == loghog_uid, 'remove without purge deleted the user'

    run(['apt-get', 'purge', '-y', '-q', PACKAGE], timeout=APT_TIMEOUT)
    assert package_state() in ('', 'un'), package_state()
    for path in (LOGDIR, WORKDIR, RUNDIR, ETC):
        assert not path.exists(), '%s is left after purge' % path
    with pytest.raises(KeyError):
        pwd.getpwnam(USER)
    with pytest.raises(KeyError):
        grp.getgrnam(USER)
    leftovers = [pid for pid in processes_named(PACKAGE)
                 if pid in installation.pids or process_uid(pid) == loghog_uid]
    assert not leftovers, 'loghogd processes left running: %s' % leftovers
