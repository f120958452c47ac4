"""Real loghogd processes for tests, on ephemeral ports in a temporary directory.

    with Loghogd(tmp_path, facilities='[app]\\nrotate = daily\\nbackup_count = 3\\n') as daemon:
        daemon.send_tcp(frame('app', body='hello'))
        lines = daemon.wait_for_lines('app/root.log', 1)

The daemon listens on 127.0.0.1 port 0 for TCP, UDP and (with `pki`) TLS;
its bound ports come from <rundir>/listening.json (`daemon.ports`). Every
wait polls with a deadline. `config` adds or overrides loghogd.conf keys:
`config={'server': {'max_message_size': '8192'}}`. `open_files` sets the
daemon's RLIMIT_NOFILE before it starts, for tests of descriptor
exhaustion: a number for soft and hard alike, or a (soft, hard) pair; by
default it inherits the test's limits.

`start_detached()` runs `loghogd -d` instead: it returns the starter's
CompletedProcess once the daemon serves (or failed); the daemon is then no
child of the test, so `stop()` signals the PID from its PID file and waits
until that process is gone.
"""

import contextlib
import json
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from loghog.protocol import encode_message
from loghogd.daemon import process_alive, read_pidfile

BIN = os.path.dirname(sys.executable)
# LOGHOGD names another loghogd, e.g. a Debian package's /usr/sbin/loghogd (tests/deb).
LOGHOGD = os.environ.get('LOGHOGD', os.path.join(BIN, 'loghogd'))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV07_PYTHON = os.path.join(REPO, '.venv-loghog07', 'bin', 'python')


LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - (?P<host>[^\n]*?) - (?P<body>.*)\n\Z', re.S)
"""One line as loghogd writes it: receive time, host name, body (maybe multi-line)."""


def bodies(lines: List[str], host: Optional[str] = None) -> List[str]:
    """The body of each line; a line not in loghogd's format (or from another host) fails."""
    found = []
    for line in lines:
        match = LINE.match(line)
        assert match, 'not a loghogd line: %r' % line[:200]
        assert host is None or match.group('host') == host, line[:200]
        found.append(match.group('body'))
    return found


def facilities_conf(sections: Dict[str, Dict[str, str]]) -> str:
    """facilities.conf text; each section rotates daily and keeps 3 backups unless it says otherwise.

        facilities_conf({'app': {}, 'signed': {'secret': 'sekrit'}})
    """
    return '\n'.join('[%s]\n%s' % (name, ''.join('%s = %s\n' % item for item in
                                                   {'rotate': 'daily', 'backup_count': '3', **options}.items()))
                     for name, options in sections.items())


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = 'condition',
             interval: float = 0.02) -> object:
    """Poll `predicate` until it returns something true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %.1f s waiting for %s' % (timeout, what))
        time.sleep(interval)


@contextlib.contextmanager
def occupied_tcp_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on while the block runs."""
    with socket.socket() as blocker:
        blocker.bind(('127.0.0.1', 0))
        blocker.listen()
        yield blocker.getsockname()[1]


def frame(app_id: str = 'app', module: str = 'root', body: str = 'hello', hostname: str = 'testhost',
          **options: object) -> bytes:
    """One LogHog v1 frame stamped now, as the 0.7 client makes it."""
    now = time.time()
    return encode_message(app_id, module, int(now), int(now % 1 * 1000) * 1000000, hostname, body,
                          **options)


class Loghogd:
    """One loghogd process with its own config, directories and ports."""

    def __init__(self, directory: str, facilities: str = '', pki: object = None,
                 config: Optional[Dict[str, Dict[str, str]]] = None, env: Optional[Dict[str, str]] = None,
                 open_files: Union[int, Tuple[int, int], None] = None) -> None:
        self.directory = str(directory)
        self.open_files = open_files
        self.logdir = os.path.join(self.directory, 'log')
        self.rundir = os.path.join(self.directory, 'run')
        self.workdir = os.path.join(self.directory, 'lib')
        self.config_path = os.path.join(self.directory, 'loghogd.conf')
        self.facilities_path = os.path.join(self.directory, 'facilities.conf')
        self.internal_log = os.path.join(self.directory, 'loghogd.log')
        self.output_path = os.path.join(self.directory, 'loghogd.out')
        self.pidfile = os.path.join(self.rundir, 'loghogd.pid')
        self.detached_pid: Optional[int] = None
        self.pki = pki
        self.env = env
        self.process: Optional[subprocess.Popen] = None
        self.ports: Dict[str, int] = {}
        self.write_facilities(facilities)
        self.write_config(config or {})

    def write_facilities(self, text: str) -> None:
        with open(self.facilities_path, 'w', encoding='utf-8') as stream:
            stream.write(text)

    def write_config(self, overrides: Dict[str, Dict[str, str]]) -> None:
        sections: Dict[str, Dict[str, str]] = {
            'main': {'workdir': self.workdir, 'logdir': self.logdir, 'rundir': self.rundir,
                     'facilities_config': self.facilities_path,
                     'pidfile': self.pidfile},
            'log': {'filename': self.internal_log, 'level': 'INFO'},
            'server': {'listen_ipv4': '127.0.0.1:0', 'listen_ipv6': '', 'listen_ipv4_ssl': '',
                       'listen_ipv6_ssl': ''},
        }
        if self.pki is not None:
            sections['server'].update({'listen_ipv4_ssl': '127.0.0.1:0', 'pemfile': self.pki.server_pem,
                                       'cacert': self.pki.ca_cert})
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        with open(self.config_path, 'w', encoding='utf-8') as stream:
            for section, values in sections.items():
                stream.write('[%s]\n' % section)
                for key, value in values.items():
                    stream.write('%s = %s\n' % (key, value))
                stream.write('\n')

    # process control ------------------------------------------------------

    def command(self, *arguments: str) -> List[str]:
        return [LOGHOGD, '-c', self.config_path, *arguments]

    def start(self, timeout: float = 15.0) -> 'Loghogd':
        listening = os.path.join(self.rundir, 'listening.json')
        if os.path.exists(listening):
            os.unlink(listening)
        output = open(self.output_path, 'ab')
        environment = dict(os.environ, **(self.env or {}))
        self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT, env=environment,
                                        preexec_fn=self._limit_open_files if self.open_files else None)
        output.close()

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError('loghogd exited with %s:\n%s' % (self.process.returncode, self.output()))
            return os.path.exists(listening)
        wait_for(ready, timeout, 'loghogd to listen')
        with open(listening, encoding='utf-8') as stream:
            self.ports = {entry['transport']: entry['port'] for entry in json.load(stream)}
        return self

    def _limit_open_files(self) -> None:
        """Runs in the child between fork and exec: the daemon's own descriptor limit."""
        limits = self.open_files if isinstance(self.open_files, tuple) else (self.open_files, self.open_files)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    def send_signal(self, signum: int) -> None:
        if self.detached_pid is not None:
            os.kill(self.detached_pid, signum)
        else:
            self.process.send_signal(signum)

    def start_detached(self, *arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """`loghogd -c CONF -d ARGUMENTS`; on exit 0 `ports` and `detached_pid` are set."""
        listening = os.path.join(self.rundir, 'listening.json')
        if os.path.exists(listening):
            os.unlink(listening)
        environment = dict(os.environ, **(self.env or {}))
        started = subprocess.run(self.command('-d', *arguments), capture_output=True, text=True,
                                 timeout=timeout, env=environment)
        if started.returncode == 0:
            self.detached_pid = read_pidfile(self.pidfile)
            with open(listening, encoding='utf-8') as stream:
                self.ports = {entry['transport']: entry['port'] for entry in json.load(stream)}
        return started

    def _stop_detached(self, signum: int, timeout: float) -> None:
        pid, self.detached_pid = self.detached_pid, None
        if pid is None or not process_alive(pid):
            return
        os.kill(pid, signum)
        try:
            wait_for(lambda: not process_alive(pid), timeout, 'loghogd PID %d to exit' % pid)
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            raise

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the daemon and return its exit status (0 for a detached one that exited)."""
        if self.detached_pid is not None:
            self._stop_detached(signum, timeout)
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> 'Loghogd':
        return self.start() if self.process is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # what it wrote ---------------------------------------------------------

    def output(self) -> str:
        """Everything the daemon printed to stdout/stderr so far."""
        try:
            with open(self.output_path, encoding='utf-8', errors='replace') as stream:
                return stream.read()
        except FileNotFoundError:
            return ''

    def path(self, relative: str) -> str:
        return os.path.join(self.logdir, relative)

    def read_lines(self, relative: str) -> List[str]:
        try:
            with open(self.path(relative), encoding='utf-8', errors='surrogateescape', newline='') as stream:
                return stream.read().splitlines(keepends=True)
        except FileNotFoundError:
            return []

    def wait_for_lines(self, relative: str, count: int, timeout: float = 10.0) -> List[str]:
        """Wait until the file holds at least `count` lines; return them all."""
        wait_for(lambda: len(self.read_lines(relative)) >= count, timeout,
                 '%d lines in %s (have %d)' % (count, relative, len(self.read_lines(relative))))
        return self.read_lines(relative)

    def wait_for_output(self, text: str, timeout: float = 10.0) -> str:
        wait_for(lambda: text in self.output(), timeout, '%r in the daemon output' % text)
        return self.output()

    def stats(self, timeout: float = 30.0) -> Dict[str, object]:
        """The counters, once the daemon has refreshed its stats file after now.

        The file is rewritten every second, but one loop pass over thousands of
        new host files takes several seconds on a loaded 2-core machine.
        """
        path = os.path.join(self.rundir, 'loghogd.stats.json')
        since = time.time()

        def fresh() -> Optional[Dict[str, object]]:
            try:
                if os.stat(path).st_mtime < since:
                    return None
                with open(path, encoding='utf-8') as stream:
                    return json.load(stream)
            except (OSError, ValueError):
                return None
        return wait_for(fresh, timeout, 'a fresh stats file')

    # sending ---------------------------------------------------------------

    def connect_tcp(self) -> socket.socket:
        return socket.create_connection(('127.0.0.1', self.ports['tcp']), timeout=5)

    def send_tcp(self, data: bytes) -> None:
        with self.connect_tcp() as sock:
            sock.sendall(data)

    def send_udp(self, data: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, ('127.0.0.1', self.ports['udp']))

    def connect_tls(self, client_pem: str, ca_cert: Optional[str] = None) -> ssl.SSLSocket:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(ca_cert or self.pki.ca_cert)
        context.load_cert_chain(client_pem)
        sock = socket.create_connection(('127.0.0.1', self.ports['tls']), timeout=5)
        return context.wrap_socket(sock)


CHECK_07_LOADED = '''
import loghog as _loaded
assert _loaded.__file__.endswith('site-packages/loghog.py'), 'not the 0.7 client: ' + _loaded.__file__
'''
"""Appended to the 0.7 client's code: run from the checkout, `python -c` would import our loghog/."""


def run_client07(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run Python `code` with the deployed loghog 0.7 client importable."""
    if not os.path.exists(VENV07_PYTHON):
        raise AssertionError('the 0.7 client is missing: run scripts/bootstrap')
    result = subprocess.run([VENV07_PYTHON, '-c', code + CHECK_07_LOADED], capture_output=True, text=True,
                            timeout=timeout, cwd='/')
    if result.returncode != 0:
        raise AssertionError('the 0.7 client failed (%d):\n%s' % (result.returncode, result.stderr[-3000:]))
    return result
