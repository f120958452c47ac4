"""The servers under test, each started fresh with its own config, ports and output.

Every server listens on 127.0.0.1 only, on free ports (port 0 where the
server says what it bound), and writes one output file whose lines end with the record's body. `stop()`
always ends the process, politely first, so no server outlives its run.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from benchmarks.loads import CLASSIC, COOKBOOK, LOGHOGD, RSYSLOG, TCP, UDP, Load
from benchmarks.workload import APP_ID, SECRET, WIRE_LOGHOG, WIRE_PICKLE, WIRE_SYSLOG

HOST = '127.0.0.1'
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
UDP_RECEIVE_BUFFER = 8 * 1024 * 1024
HUGE_SIZE = 1 << 50
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PR_SET_PDEATHSIG = 1
STDLIB_ONLY = ('import sys; sys.modules["msgspec"] = sys.modules["isal"] = None; del sys.argv[0]; '
                   'from loghogd.main import main; sys.exit(main())')
"""loghogd as on Debian 12, without msgspec and isal: its imports of them fail, so json decodes and zlib inflates."""

Address = Tuple[str, int]


class ServerError(RuntimeError):
    """A server did not start or died; the message carries the tail of its stderr."""


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the harness dies, even by SIGKILL,
    so that no server or generator outlives an interrupted run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
            stream.bind((HOST, 0))
            port = stream.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
                try:
                    datagram.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise ServerError('found no port free for both TCP and UDP on %s' % HOST)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `predicate` until true; raise naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise ServerError('timed out after %.0f s waiting for %s' % (timeout, what))
        time.sleep(interval)


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


class Certificates:
    """A private CA, a server pem and a client pem, made once per harness run
    with the project's own loghog-server-cert and loghog-client-cert."""

    CLIENT_NAME = 'bench-client'

    def __init__(self, directory: str, bin_dir: str) -> None:
        self.directory = directory
        self.bin_dir = bin_dir
        self.cacert = os.path.join(directory, 'loghog-ca.cert')
        self.server_pem = os.path.join(directory, 'loghog-server.pem')
        self.client_pem = os.path.join(directory, '%s.pem' % self.CLIENT_NAME)

    def ensure(self) -> None:
        """Make the files if missing; raise ServerError saying why when the tools fail."""
        if all(os.path.exists(path) for path in (self.cacert, self.server_pem, self.client_pem)):
            return
        os.makedirs(self.directory, exist_ok=True)
        self._run('loghog-server-cert', '--dir', self.directory, '--cn', 'localhost', '--force')
        self._run('loghog-client-cert', self.CLIENT_NAME, '--dir', self.directory, '--out', self.client_pem)
        for path in (self.cacert, self.server_pem, self.client_pem):
            if not os.path.exists(path):
                raise ServerError('certificate tools ran but %s is missing' % path)

    def _run(self, tool: str, *args: str) -> None:
        command = [os.path.join(self.bin_dir, tool)] + list(args)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except OSError as error:
            raise ServerError('cannot run %s: %s' % (tool, error)) from None
        if done.returncode != 0:
            raise ServerError('%s failed (%d): %s' % (' '.join(command), done.returncode,
                                                     (done.stderr or done.stdout).strip()[-500:]))


class Server:
    """One fresh server process for one run of one load."""

    name = ''
    wire = ''

    def __init__(self, workdir: str, load: Load) -> None:
        self.workdir = workdir
        self.load = load
        self.process: Optional[subprocess.Popen] = None
        self.ports: Dict[str, int] = {}
        os.makedirs(workdir, exist_ok=True)
        self._stderr_path = os.path.join(workdir, 'stderr.txt')

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def output_path(self) -> str:
        raise NotImplementedError

    def address(self, transport: str) -> Address:
        return HOST, self.ports[transport]

    def command(self) -> List[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write the config and choose ports before the process starts."""

    def ready(self) -> bool:
        return accepts_connections(self.ports[TCP])

    def start(self) -> None:
        self.prepare()
        with open(self._stderr_path, 'wb') as stderr:
            self.process = subprocess.Popen(self.command(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                            stdout=stderr, stderr=stderr, preexec_fn=die_with_parent)
        wait_until(self._ready_or_dead, START_TIMEOUT, '%s to listen' % self.name)

    def _ready_or_dead(self) -> bool:
        if self.process.poll() is not None:
            raise ServerError('%s exited with %s at start: %s'
                              % (self.name, self.process.returncode, self.stderr_tail()))
        return self.ready()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServerError('%s died with %s: %s' % (self.name, self.process.returncode, self.stderr_tail()))

    def stderr_tail(self, limit: int = 1500) -> str:
        try:
            with open(self._stderr_path, 'rb') as stderr:
                stderr.seek(max(0, os.path.getsize(self._stderr_path) - limit))
                return stderr.read().decode('utf-8', 'replace').strip()
        except OSError:
            return ''

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within STOP_TIMEOUT."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def __enter__(self) -> 'Server':
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class LoghogdServer(Server):
    """`.venv/bin/loghogd -c <workdir>/loghogd.conf` in the foreground; app `bench`'s
    root facility rotates on a size it never reaches during a run."""

    name = LOGHOGD

    def __init__(self, workdir: str, load: Load, executable: str, certificates: Optional[Certificates]) -> None:
        super().__init__(workdir, load)
        self.executable = executable
        self.certificates = certificates
        self.logdir = os.path.join(workdir, 'logs')
        self.wire = WIRE_SYSLOG if load.syslog else WIRE_LOGHOG

    @property
    def output_path(self) -> str:
        return os.path.join(self.logdir, APP_ID, 'root.log')

    def command(self) -> List[str]:
        arguments = ['-c', os.path.join(self.workdir, 'loghogd.conf')]
        if self.load.stdlib:  # the interpreter beside the executable, with msgspec made unimportable
            python = os.path.join(os.path.dirname(self.executable), 'python')
            return [python, '-c', STDLIB_ONLY, self.executable] + arguments
        return [self.executable] + arguments

    def prepare(self) -> None:
        for name in ('work', 'run', 'logs'):
            os.makedirs(os.path.join(self.workdir, name), exist_ok=True)
        with open(os.path.join(self.workdir, 'loghogd.conf'), 'w') as config:
            config.write(self._main_config())
        with open(os.path.join(self.workdir, 'facilities.conf'), 'w') as facilities:
            facilities.write(self._facilities_config())

    def ready(self) -> bool:
        """loghogd binds port 0 and names the ports it got in <rundir>/listening.json."""
        try:
            with open(os.path.join(self.workdir, 'run', 'listening.json')) as listening:
                self.ports = {entry['transport']: entry['port'] for entry in json.load(listening)}
        except (FileNotFoundError, ValueError):
            return False
        if self.load.syslog:
            self.ports = {TCP: self.ports['syslog-tcp'], UDP: self.ports['syslog-udp']}
        return True

    def _main_config(self) -> str:
        workdir = self.workdir
        lines = [
            '[main]',
            'daemon = no',
            'workdir = %s' % os.path.join(workdir, 'work'),
            'logdir = %s' % self.logdir,
            'rundir = %s' % os.path.join(workdir, 'run'),
            'facilities_config = %s' % os.path.join(workdir, 'facilities.conf'),
            'pidfile = %s' % os.path.join(workdir, 'run', 'loghogd.pid'),
            '',
            '[log]',
            'filename = %s' % os.path.join(workdir, 'loghogd-internal.log'),
            'level = WARNING',
            '',
            '[server]',
            'listen_ipv4 = %s:0' % HOST,
            'listen_ipv6 =',
            'udp_receive_buffer = %d' % UDP_RECEIVE_BUFFER,
            # Every benchmark client connects from one address, and zlib-c1 measures
            # what inflating costs, not the per-address limits.
            'max_connections_per_address = 4096',
            'max_inflated_bytes_per_second = 1G',
            'listen_ipv4_syslog = %s' % ('%s:0' % HOST if self.load.syslog else ''),
        ]
        if self.certificates is not None:
            lines += [
                'listen_ipv4_ssl = %s:0' % HOST,
                'listen_ipv6_ssl =',
                'pemfile = %s' % self.certificates.server_pem,
                'cacert = %s' % self.certificates.cacert,
            ]
        else:
            lines += ['listen_ipv4_ssl =', 'listen_ipv6_ssl =']
        return '\n'.join(lines) + '\n'

    def _facilities_config(self) -> str:
        lines = ['[%s]' % APP_ID, 'rotate = size', 'max_size = %d' % HUGE_SIZE, 'backup_count = 1']
        if self.load.signed:
            lines.append('secret = %s' % SECRET)
        if self.load.sync:
            lines.append('sync = yes')
        if self.load.line_format != CLASSIC:
            lines.append('format = %s' % self.load.line_format)
        return '\n'.join(lines) + '\n'


class RsyslogServer(Server):
    """rsyslogd 8 with imtcp and imudp bound to a ruleset holding one omfile action;
    the default ruleset is empty so rsyslog's own messages stay out of the file."""

    name = RSYSLOG
    wire = WIRE_SYSLOG

    def __init__(self, workdir: str, load: Load, executable: str) -> None:
        super().__init__(workdir, load)
        self.executable = executable

    @property
    def output_path(self) -> str:
        return os.path.join(self.workdir, 'out', 'bench.log')

    def command(self) -> List[str]:
        return [self.executable, '-n', '-f', os.path.join(self.workdir, 'rsyslog.conf'),
                '-i', os.path.join(self.workdir, 'rsyslogd.pid')]

    def prepare(self) -> None:
        port = free_port()
        self.ports = {TCP: port, UDP: port}
        for name in ('work', 'out'):
            os.makedirs(os.path.join(self.workdir, name), exist_ok=True)
        config = '\n'.join([
            'global(workDirectory="%s")' % os.path.join(self.workdir, 'work'),
            'module(load="imtcp" maxSessions="4096")',
            'module(load="imudp")',
            'ruleset(name="bench") {',
            '    action(type="omfile" file="%s" template="RSYSLOG_FileFormat")' % self.output_path,
            '}',
            'input(type="imtcp" address="%s" port="%d" ruleset="bench")' % (HOST, port),
            'input(type="imudp" address="%s" port="%d" ruleset="bench" rcvbufSize="%d")'
            % (HOST, port, UDP_RECEIVE_BUFFER),
        ]) + '\n'
        with open(os.path.join(self.workdir, 'rsyslog.conf'), 'w') as conf:
            conf.write(config)


class CookbookServer(Server):
    """benchmarks/cookbook_receiver.py: ThreadingTCPServer + pickle + FileHandler."""

    name = COOKBOOK
    wire = WIRE_PICKLE

    @property
    def output_path(self) -> str:
        return os.path.join(self.workdir, 'bench.log')

    @property
    def _port_file(self) -> str:
        return os.path.join(self.workdir, 'port')

    def command(self) -> List[str]:
        return [sys.executable, '-m', 'benchmarks.cookbook_receiver',
                '--port-file', self._port_file, '--output', self.output_path]

    def ready(self) -> bool:
        if not self.ports:
            try:
                with open(self._port_file) as port_file:
                    self.ports = {TCP: int(port_file.read())}
            except (FileNotFoundError, ValueError):
                return False
        return True


def find_rsyslogd() -> Optional[str]:
    return shutil.which('rsyslogd') or next(
        (path for path in ('/usr/sbin/rsyslogd', '/sbin/rsyslogd') if os.access(path, os.X_OK)), None)
