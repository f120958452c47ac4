"""A throw-away Debian system for package tests: an overlay on a cached debootstrap chroot.

`scripts/debian-chroot RELEASE` makes the chroot once (under a lock) and
keeps it in /var/cache/loghogd-tests (CI caches that path); `Chroot` mounts
an overlay on it with /proc and /dev, so whatever a test installs or starts
is gone at exit and the cache stays as debootstrap left it. The chroot
shares this machine's network: daemons in it must use free ports.
"""

import fcntl
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import List, Optional

from tests.support.daemon import wait_for

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get('LOGHOGD_CHROOT_CACHE', '/var/cache/loghogd-tests'))
DEBOOTSTRAP_TIMEOUT = 1800
# Which libraries loghogd decodes JSON and inflates zlib with on each
# release: msgspec and isal where Debian ships python3-msgspec and
# python3-isal (the package recommends them), the standard library's json
# and zlib elsewhere. LIBRARY_PROBE asks the installed package
# (loghogd.batchdecode.DECODER_NAME, loghogd.inflating.INFLATER_NAME), and
# --status --json names them under LIBRARY_KEYS.
EXPECTED_LIBRARIES = {'bookworm': ('json', 'zlib'), 'trixie': ('msgspec', 'isal')}
LIBRARY_PROBE = ('cd / && python3 -c "from loghogd.batchdecode import DECODER_NAME; '
                 'from loghogd.inflating import INFLATER_NAME; print(DECODER_NAME); print(INFLATER_NAME)"')
LIBRARY_KEYS = ('batch_decoder', 'inflater')


def assert_libraries(probed: str, status: dict, release: str) -> None:
    """The package's decoder and inflater, and the running daemon's, suit the release."""
    expected = EXPECTED_LIBRARIES[release]
    found = (probed.strip().splitlines(), [str(status.get(key)) for key in LIBRARY_KEYS])
    for names in found:
        assert len(names) == 2 and all(name.startswith(want) for name, want in zip(names, expected)), (
            'on %s: %r, expected %r' % (release, found, expected))


class Chroot:
    """An overlay mounted on the cached chroot of `release` below `directory`."""

    def __init__(self, release: str, directory: Path) -> None:
        self.release = release
        self.directory = directory
        self.root = directory / 'root'
        self.mounts: List[Path] = []
        self._lock: Optional[int] = None

    def __enter__(self) -> 'Chroot':
        made = subprocess.run([str(REPO / 'scripts' / 'debian-chroot'), self.release], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=DEBOOTSTRAP_TIMEOUT)
        assert made.returncode == 0, 'scripts/debian-chroot %s failed:\n%s' % (self.release, made.stderr[-3000:])
        base = made.stdout.strip()
        # Shared: scripts/debian-chroot takes it exclusively to remake a chroot.
        self._lock = os.open(str(CACHE / ('%s.lock' % self.release)), os.O_RDONLY | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_SH)
        for name in ('upper', 'work', 'root'):
            (self.directory / name).mkdir()
        try:
            self._mount(['-t', 'overlay', 'overlay', '-o', 'lowerdir=%s,upperdir=%s,workdir=%s' % (
                base, self.directory / 'upper', self.directory / 'work')], self.root)
            self._mount(['-t', 'proc', 'proc'], self.root / 'proc')
            self._mount(['--bind', '/dev'], self.root / 'dev')
            self._mount(['--bind', '/dev/pts'], self.root / 'dev' / 'pts')
        except BaseException:
            self.__exit__(None, None, None)
            raise
        # This machine's network, so its name servers and the CAs it trusts (a proxy's, say).
        shutil.copy('/etc/resolv.conf', str(self.root / 'etc' / 'resolv.conf'))
        shutil.copy('/etc/ssl/certs/ca-certificates.crt', str(self.root / 'etc' / 'ssl' / 'certs'))
        # As in Debian's own chroots: installing a package starts no service.
        policy = self.root / 'usr' / 'sbin' / 'policy-rc.d'
        policy.write_text('#!/bin/sh\nexit 101\n')
        policy.chmod(0o755)
        return self

    def _mount(self, arguments: List[str], target: Path) -> None:
        subprocess.run(['mount', *arguments, str(target)], check=True, timeout=60)
        self.mounts.append(target)

    def path(self, inside: str) -> Path:
        """This machine's path of a path inside the chroot."""
        return self.root / inside.lstrip('/')

    def run(self, command: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """A shell command inside the chroot, bounded; on failure the assertion shows its output."""
        environment = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'DEBIAN_FRONTEND': 'noninteractive',
                       'LANG': 'C.UTF-8', 'HOME': '/root'}
        result = subprocess.run(['chroot', str(self.root), '/bin/sh', '-c', command], env=environment,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, 'in the %s chroot, %s exited %d:\n%s' % (
                self.release, command, result.returncode, result.stdout[-5000:])
        return result

    def processes(self) -> List[int]:
        """The processes running inside this chroot."""
        found = []
        for entry in os.listdir('/proc'):
            try:
                if entry.isdigit() and os.readlink('/proc/%s/root' % entry) == str(self.root):
                    found.append(int(entry))
            except OSError:
                continue
        return found

    def __exit__(self, *exc_info: object) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not self.processes(), 15, 'the processes in the %s chroot to die' % self.release)
        for target in reversed(self.mounts):
            subprocess.run(['umount', str(target)], check=False, timeout=60)
        self.mounts.clear()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
