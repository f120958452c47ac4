"""Real syslog senders for tests: Debian's rsyslogd and nginx, in a temporary directory.

    with Rsyslog(tmp_path, 'if $programname == "app" then action(type="omfwd" ...)') as rsyslog:
        rsyslog.send('app', 'hello')         # into its own UNIX socket, as a local program would

Each runs in the foreground as a child of the test, with its own config,
PID file and sockets under the directory (no fixed port), and is stopped by
its PID. The binaries come from apt (scripts/bootstrap installs them).
"""

import os
import signal
import socket
import subprocess
from typing import List, Optional

from tests.support.daemon import wait_for

RSYSLOGD = '/usr/sbin/rsyslogd'
NGINX = '/usr/sbin/nginx'


def accepts(path: str) -> bool:
    """Whether a stream UNIX socket at `path` takes a connection: the file appears at bind, before listen."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


class Peer:
    """A foreground process started from a config file and stopped by its PID."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = os.path.join(str(directory), name)
        os.makedirs(self.directory, exist_ok=True)
        self.output_path = os.path.join(self.directory, 'output')
        self.process: Optional[subprocess.Popen] = None

    def command(self) -> List[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def output(self) -> str:
        with open(self.output_path, encoding='utf-8', errors='replace') as stream:
            return stream.read()

    def start(self) -> 'Peer':
        with open(self.output_path, 'ab') as output:
            self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

        def started() -> bool:
            if self.process.poll() is not None:
                raise AssertionError('%s exited with %s:\n%s' % (self.command()[0], self.process.returncode,
                                                                  self.output()))
            return self.ready()
        wait_for(started, 20.0, '%s to start' % os.path.basename(self.command()[0]))
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> 'Peer':
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class Rsyslog(Peer):
    """rsyslogd reading its own UNIX socket, with `rules` (rsyslog.conf text) for what arrives there."""

    def __init__(self, directory: str, rules: str) -> None:
        super().__init__(directory, 'rsyslog')
        self.socket_path = os.path.join(self.directory, 'log.sock')
        self.config_path = os.path.join(self.directory, 'rsyslog.conf')
        self.pidfile = os.path.join(self.directory, 'rsyslogd.pid')
        with open(self.config_path, 'w', encoding='utf-8') as stream:
            stream.write('global(workDirectory="%s")\n'
                         'module(load="imuxsock" SysSock.Use="off")\n'
                         'input(type="imuxsock" Socket="%s")\n%s\n'
                         % (self.directory, self.socket_path, rules))

    def command(self) -> List[str]:
        return [RSYSLOGD, '-n', '-f', self.config_path, '-i', self.pidfile]

    def ready(self) -> bool:
        return os.path.exists(self.socket_path)

    def send(self, tag: str, message: str) -> None:
        """One message as a local program sends it to /dev/log."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(('<14>%s: %s' % (tag, message)).encode('utf-8'), self.socket_path)


class Nginx(Peer):
    """nginx serving on a UNIX socket, with `access_log` (an nginx directive) in its http block."""

    def __init__(self, directory: str, access_log: str) -> None:
        super().__init__(directory, 'nginx')
        self.socket_path = os.path.join(self.directory, 'http.sock')
        self.config_path = os.path.join(self.directory, 'nginx.conf')
        with open(self.config_path, 'w', encoding='utf-8') as stream:
            stream.write('''user root;
pid %(dir)s/nginx.pid;
error_log stderr;
daemon off;
master_process off;
events {}
http {
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    %(access_log)s
    server {
        listen unix:%(socket)s;
        location / { return 200 "hello\\n"; }
    }
}
''' % {'dir': self.directory, 'access_log': access_log, 'socket': self.socket_path})

    def command(self) -> List[str]:
        return [NGINX, '-p', self.directory, '-c', self.config_path]

    def ready(self) -> bool:
        return accepts(self.socket_path)

    def get(self, path: str) -> bytes:
        """One HTTP/1.0 request over the UNIX socket; the response as received."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.socket_path)
            sock.sendall(b'GET %s HTTP/1.0\r\nHost: test\r\n\r\n' % path.encode('ascii'))
            response = b''
            while True:
                data = sock.recv(65536)
                if not data:
                    return response
                response += data
