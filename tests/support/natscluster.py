"""A real 3-node nats-server cluster (or a single node) with JetStream on loopback, for tests.

    with NatsCluster(tmp_path) as cluster:
        cluster.add_stream('LOGHOG', ['loghog.>'], replicas=3)
        cluster.kill(0); cluster.start(0)

Each node gets free ports (client, cluster route, monitoring) chosen by the
kernel once, so a node killed and restarted comes back where its peers
expect it; stores live in the test's temporary directory. Nodes are
started and stopped by PID; every wait polls with a deadline.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from typing import List, Optional

import pytest

from tests.support.daemon import wait_for

NATS_SERVER = shutil.which('nats-server') or '/usr/sbin/nats-server'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def require_nats() -> None:
    """Skip a test when nats-server or nats-py is missing (scripts/bootstrap installs both)."""
    if not os.path.exists(NATS_SERVER):
        pytest.skip('nats-server is not installed (scripts/bootstrap installs it)')
    pytest.importorskip('nats')


class NatsNode:
    """One nats-server process of the cluster."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.name = name
        self.port = free_port()
        self.cluster_port = free_port()
        self.monitor_port = free_port()
        self.config_path = os.path.join(directory, 'nats.conf')
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return 'nats://127.0.0.1:%d' % self.port

    def write_config(self, routes: List[int]) -> None:
        os.makedirs(os.path.join(self.directory, 'store'), exist_ok=True)
        route_list = ', '.join('nats-route://127.0.0.1:%d' % port for port in routes)
        text = ('server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\njetstream { store_dir: "%s" }\n'
                % (self.name, self.port, self.monitor_port, os.path.join(self.directory, 'store')))
        if routes:
            text += ('cluster { name: loghog-test\n listen: 127.0.0.1:%d\n routes: [%s] }\n'
                     % (self.cluster_port, route_list))
        with open(self.config_path, 'w', encoding='utf-8') as stream:
            stream.write(text)

    def start(self) -> None:
        output = open(os.path.join(self.directory, 'nats.out'), 'ab')
        self.process = subprocess.Popen([NATS_SERVER, '-c', self.config_path], stdout=output,
                                        stderr=subprocess.STDOUT)
        output.close()

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError('nats-server %s exited: %s' % (self.name, self.output()[-2000:]))
        try:
            with urllib.request.urlopen('http://127.0.0.1:%d/healthz' % self.monitor_port, timeout=1) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def output(self) -> str:
        try:
            with open(os.path.join(self.directory, 'nats.out'), encoding='utf-8', errors='replace') as stream:
                return stream.read()
        except FileNotFoundError:
            return ''


class NatsCluster:
    """Three nats-server nodes routed to each other, JetStream on."""

    def __init__(self, directory: str, size: int = 3) -> None:
        self.nodes = [NatsNode(os.path.join(str(directory), 'nats%d' % index), 'n%d' % index)
                      for index in range(size)]
        for node in self.nodes:
            node.write_config([other.cluster_port for other in self.nodes if other is not node])

    @property
    def urls(self) -> List[str]:
        return [node.url for node in self.nodes]

    def start(self, index: Optional[int] = None, timeout: float = 60.0) -> 'NatsCluster':
        """Start one node (or all) and wait until it reports healthy."""
        chosen = self.nodes if index is None else [self.nodes[index]]
        for node in chosen:
            node.start()
        for node in chosen:
            wait_for(node.healthy, timeout, 'nats-server %s to be healthy' % node.name, interval=0.1)
        return self

    def kill(self, index: int) -> None:
        self.nodes[index].stop(signal.SIGKILL)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> 'NatsCluster':
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def run(self, coroutine_function, timeout: float = 60.0):
        """Run `coroutine_function(js)` with a JetStream context on the cluster; retried until the deadline."""
        async def attempt():
            import nats
            connection = await nats.connect(servers=self.urls, connect_timeout=2, max_reconnect_attempts=5)
            try:
                return await coroutine_function(connection.jetstream())
            finally:
                await connection.close()

        errors: List[str] = []

        def once():
            try:
                return (asyncio.run(asyncio.wait_for(attempt(), 10)),)
            except Exception as error:  # the cluster may still be electing its leaders
                errors.append(repr(error))
                return None
        try:
            return wait_for(once, timeout, 'a JetStream request to succeed', interval=0.5)[0]
        except AssertionError as error:
            raise AssertionError('%s; last errors: %s' % (error, errors[-3:])) from None

    def add_stream(self, name: str, subjects: List[str], replicas: int = 3,
                   duplicate_window: float = 600.0) -> None:
        async def add(js):
            from nats.js.api import StreamConfig
            return await js.add_stream(StreamConfig(name=name, subjects=subjects, num_replicas=replicas,
                                                    duplicate_window=duplicate_window))
        self.run(add)

    def stream_messages(self, name: str) -> int:
        async def info(js):
            return (await js.stream_info(name)).state.messages
        return self.run(info)
