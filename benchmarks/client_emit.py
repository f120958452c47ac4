"""What one logging call costs the application: our LoghogHandler (plain, acknowledged, with a disk
spool), logging.FileHandler, loghog 0.7.

    .venv/bin/python benchmarks/client_emit.py [--records N]

Each handler runs in its own child process (the 0.7 client from
.venv-loghog07, since both packages are named `loghog`) with this script in
`--measure` mode, so no handler shares a process or a GIL with the
listener, and the handlers take turns for `--rounds` rounds. This process runs a TCP listener that reads and discards, as
loghogd would. Per handler: median, p99 and max of `logger.info()` with
the server up, then the max (and median) with the port closed.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY_PYTHON = os.path.join(REPO, '.venv-loghog07', 'bin', 'python')
MESSAGE = 'GET /api/v1/items/%d 200 1532 bytes in %.3f ms user=%s'


def _time_calls(logger, count: int) -> List[int]:
    """Nanoseconds per logging call."""
    clock = time.perf_counter_ns
    samples = []
    for i in range(count):
        start = clock()
        logger.info(MESSAGE, i, 12.5, 'alice')
        samples.append(clock() - start)
    return samples


def _summary(samples: List[int]) -> Dict[str, float]:
    ordered = sorted(samples)
    return {'median_us': statistics.median(ordered) / 1000,
            'p99_us': ordered[int(len(ordered) * 0.99)] / 1000,
            'max_us': ordered[-1] / 1000,
            'mean_us': sum(ordered) / len(ordered) / 1000}


def _make_handler(kind: str, port: int, workdir: str, phase: str):
    import logging
    if kind == 'file':
        return logging.FileHandler(os.path.join(workdir, 'bench.log'))
    if kind.startswith('ours'):
        sys.path.insert(0, REPO)
    from loghog import LoghogHandler
    if kind == 'ours-spool':
        return LoghogHandler('bench', '127.0.0.1', port, hostname='bench1',
                             spool_dir=os.path.join(workdir, 'spool-' + phase))
    if kind == 'ours-acked':
        return LoghogHandler('bench', '127.0.0.1', port, hostname='bench1', acknowledged=True)
    if kind == 'ours':
        return LoghogHandler('bench', '127.0.0.1', port, hostname='bench1', acknowledged=False)
    return LoghogHandler('bench', '127.0.0.1', port, hostname='bench1', max_buffer_size=100000)


def measure(kind: str, port: int, down_port: int, count: int, workdir: str) -> Dict[str, object]:
    """Runs in the child: time `count` calls with the server up, then with it down."""
    import logging
    results: Dict[str, object] = {}
    for phase, target in (('up', port), ('down', down_port)):
        if phase == 'down' and kind == 'file':
            continue
        handler = _make_handler(kind, target, workdir, phase)
        logger = logging.getLogger('bench.%s.%s' % (kind, phase))
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        _time_calls(logger, min(count, 2000))
        results[phase] = _summary(_time_calls(logger, count))
        logger.removeHandler(handler)
        if kind.startswith('ours'):
            handler.flush_timeout = 0.0 if phase == 'down' else 10.0
        handler.close()
    return results


class DiscardingListener:
    """Accepts TCP connections and reads everything, like a server that keeps up; acknowledges on request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        sys.path.insert(0, REPO)
        from loghog.protocol import FLAG_ACK_REQUEST, StreamDecoder, encode_ack
        decoder = StreamDecoder()
        with conn:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    return
                acked = [frame for frame in decoder.feed(data) if frame[0] & FLAG_ACK_REQUEST]
                if acked:
                    conn.sendall(encode_ack(json.loads(acked[-1][1])['seq']))


def closed_port() -> int:
    """A port that refuses connections (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_child(python: str, kind: str, port: int, down_port: int, count: int) -> Dict[str, object]:
    with tempfile.TemporaryDirectory() as workdir:
        output = subprocess.run(
            [python, os.path.abspath(__file__), '--measure', kind, '--port', str(port),
             '--down-port', str(down_port), '--records', str(count), '--workdir', workdir],
            check=True, capture_output=True, text=True, timeout=600, cwd=workdir).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=20000)
    parser.add_argument('--rounds', type=int, default=3,
                        help='runs per handler, interleaved; each figure is the best round (noise only adds)')
    parser.add_argument('--measure', choices=('ours', 'ours-acked', 'ours-spool', 'file', 'legacy'), help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--down-port', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--workdir', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.port, args.down_port, args.records, args.workdir)))
        return
    listener = DiscardingListener()
    down_port = closed_port()
    rows = [('loghog (this repo)', sys.executable, 'ours'),
            ('loghog, acknowledged', sys.executable, 'ours-acked'),
            ('loghog, spool_dir', sys.executable, 'ours-spool'),
            ('logging.FileHandler', sys.executable, 'file'),
            ('loghog 0.7', LEGACY_PYTHON, 'legacy')]
    if not os.path.exists(LEGACY_PYTHON):
        print('skipping loghog 0.7: %s missing (run scripts/bootstrap)' % LEGACY_PYTHON, file=sys.stderr)
        rows.pop()
    rounds: Dict[str, List[Dict[str, Dict[str, float]]]] = {label: [] for label, _, _ in rows}
    for _ in range(args.rounds):
        for label, python, kind in rows:
            rounds[label].append(run_child(python, kind, listener.port, down_port, args.records))
    print_table({label: best_of(runs) for label, runs in rounds.items()}, args.records, args.rounds)


def best_of(runs: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Each figure's lowest value over the rounds: on a shared machine, noise only ever adds."""
    return {phase: {metric: min(run[phase][metric] for run in runs) for metric in runs[0][phase]}
            for phase in runs[0]}


def print_table(results: Dict[str, Dict[str, Dict[str, float]]], count: int, rounds: int) -> None:
    file_median = results['logging.FileHandler']['up']['median_us']
    print('emit cost per logging.info() call, %d records, best of %d rounds, Python %s'
          % (count, rounds, sys.version.split()[0]))
    print('%-22s %9s %9s %9s %10s %9s %14s %14s'
          % ('handler', 'median', 'p99', 'mean', 'max', 'x File', 'down median', 'down max'))
    for label, phases in results.items():
        up = phases['up']
        down = phases.get('down')
        print('%-22s %7.2fus %7.2fus %7.2fus %8.1fus %8.2fx %12s %12s'
              % (label, up['median_us'], up['p99_us'], up['mean_us'], up['max_us'],
                 up['median_us'] / file_median,
                 '%.2fus' % down['median_us'] if down else '-',
                 '%.1fus' % down['max_us'] if down else '-'))


if __name__ == '__main__':
    main()
