"""Scale-out throughput: edge -> JetStream (3 nodes, R3) -> writer, against one loghogd.

    .venv/bin/python -m benchmarks.scale_out [--records 200000] [--nodes 3]

Both setups get the same version 1 frames over one TCP connection; the
clock stops when the (writer's) file holds every line. CPU is the user +
system time of every process of the setup (loghogds and nats-servers),
read from /proc, per million records. Uses the test fixtures for the
processes, so it needs what scripts/bootstrap installs.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

from tests.support.daemon import Loghogd, frame
from tests.support.natscluster import NatsCluster

FACILITIES = '[bench]\nrotate = size\nmax_size = 10G\nbackup_count = 1\n'
EDGE_FACILITIES = FACILITIES + 'write = no\nforward = yes\n'
BODY = '127.0.0.1 - - [01/Dec/2026:12:00:00 +0000] "GET /index.html HTTP/1.1" 200 5120 "-" "bench" %d'
TICKS = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pids: List[int]) -> float:
    total = 0
    for pid in pids:
        with open('/proc/%d/stat' % pid, encoding='ascii') as stream:
            fields = stream.read().rsplit(')', 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def send_and_wait(port: int, data: bytes, writer: Loghogd, records: int, pids: List[int]) -> Tuple[float, float]:
    import socket
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    with socket.create_connection(('127.0.0.1', port)) as sock:
        sock.sendall(data)
    path = writer.path('bench/root.log')
    while True:
        try:
            with open(path, 'rb') as stream:
                if stream.read().count(b'\n') >= records:
                    break
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    return time.monotonic() - started, cpu_seconds(pids) - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=200000)
    parser.add_argument('--nodes', type=int, default=3, help='NATS nodes; the stream has as many replicas')
    arguments = parser.parse_args()
    records, nodes = arguments.records, arguments.nodes
    data = b''.join(frame('bench', 'root', BODY % number) for number in range(records))
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / 'single').mkdir()
        with Loghogd(root / 'single', FACILITIES) as single:
            seconds, cpu = send_and_wait(single.ports['tcp'], data, single, records, [single.process.pid])
        rows.append(('one loghogd', seconds, cpu))
        with NatsCluster(root / 'nats', size=nodes) as cluster:
            cluster.add_stream('LOGHOG', ['loghog.>'], replicas=nodes)
            for name in ('edge', 'writer'):
                (root / name).mkdir()
            edge = Loghogd(root / 'edge', EDGE_FACILITIES, config={'forward': {'nats_servers': ','.join(cluster.urls)}})
            writer = Loghogd(root / 'writer', FACILITIES,
                             config={'consume': {'nats_servers': ','.join(cluster.urls), 'durable': 'bench'}})
            with edge, writer:
                pids = [edge.process.pid, writer.process.pid] + [node.process.pid for node in cluster.nodes]
                before = [cpu_seconds([pid]) for pid in pids]
                seconds, cpu = send_and_wait(edge.ports['tcp'], data, writer, records, pids)
                shares = [cpu_seconds([pid]) - was for pid, was in zip(pids, before)]
        rows.append(('edge -> JetStream R%d -> writer' % nodes, seconds, cpu))
        print('CPU s per 1M records: edge %.1f, writer %.1f, nats-servers %s' % (
            shares[0] * 1e6 / records, shares[1] * 1e6 / records,
            ', '.join('%.1f' % (share * 1e6 / records) for share in shares[2:])))
    print('| setup | records | records/s | CPU s per 1M records |')
    print('|---|---|---|---|')
    for name, seconds, cpu in rows:
        print('| %s | %d | %.0f | %.1f |' % (name, records, records / seconds, cpu * 1e6 / records))


if __name__ == '__main__':
    main()
