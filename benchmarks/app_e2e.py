"""End to end from a Python application: N records logged from P processes until every line is on disk.

    .venv/bin/python -m benchmarks.app_e2e [--records N] [--processes 1,4] [--repetitions R] [--quick]

Three ways, taking turns: `LoghogHandler` (this repository's client, its
defaults: acknowledged, batches) into loghogd, `logging.handlers.SysLogHandler`
over TCP into rsyslog (the harness's configuration of both servers), and
`logging.FileHandler` to a local file (every process appending to one file).
Each process logs its share of the benchmark's ~175-byte bodies as fast as
it can, timing every handler `emit()` call (the same thin timing wrapper
around each handler) and every `logger.info()` call, then closes its handler
(which for LoghogHandler waits for the acknowledgements). Figures: seconds
from the start signal until the file holds every line (its sequence numbers
checked once), the application's CPU per record (user + system time of the
logging processes, their sender threads included, over all records), the
median `emit()` and the median `logger.info()`. The ways take turns for each
repetition and each figure is the median of the repetitions. The ratios are
against FileHandler.
"""

import argparse
import logging
import logging.handlers
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

from benchmarks import probe
from benchmarks.loads import LOGHOGD, RSYSLOG, TCP, Load
from benchmarks.servers import ROOT, LoghogdServer, RsyslogServer, find_rsyslogd
from benchmarks.workload import APP_ID, HOSTNAME, body, split_ranges
from loghog.batch import ENCODER_NAME
from loghogd.batchdecode import DECODER_NAME

FILE = 'file'
WAYS = (LOGHOGD, RSYSLOG, FILE)
LABELS = {LOGHOGD: 'LoghogHandler -> loghogd', RSYSLOG: 'SysLogHandler TCP -> rsyslog', FILE: 'FileHandler'}
DEADLINE = 600.0


def make_handler(way: str, address: Any, path: str) -> logging.Handler:
    if way == LOGHOGD:
        from loghog import LoghogHandler
        return LoghogHandler(APP_ID, address[0], address[1], hostname=HOSTNAME, flush_timeout=60.0)
    if way == RSYSLOG:
        handler = logging.handlers.SysLogHandler(address, socktype=socket.SOCK_STREAM)
        handler.append_nul = False
        handler.setFormatter(logging.Formatter(APP_ID + ': %(message)s\n'))  # rsyslog frames TCP by LF
        return handler
    return logging.FileHandler(path)


def log_share(way: str, address: Any, path: str, seqs: range, start: Any, results: Any) -> None:
    """One application process: log `seqs`, timing each call, close, report its CPU and emit times."""
    handler = make_handler(way, address, path)
    logger = logging.getLogger('app')
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    bodies = [body(seq) for seq in seqs]
    clock = time.perf_counter_ns
    calls, emits = [], []
    emit = handler.emit

    def timed_emit(record: logging.LogRecord) -> None:
        began = clock()
        emit(record)
        emits.append(clock() - began)

    handler.emit = timed_emit  # type: ignore[method-assign]
    start.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for text in bodies:
        began = clock()
        logger.info(text)
        calls.append(clock() - began)
    handler.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put({'cpu': usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime,
                 'emit_ns': statistics.median(emits), 'call_ns': statistics.median(calls), 'records': len(bodies)})


def run_way(way: str, records: int, processes: int, scratch: str, loghogd: str) -> Dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix='%s-p%d-' % (way, processes), dir=scratch)
    load = Load('app-e2e', TCP, processes, (LOGHOGD, RSYSLOG))
    server = None
    if way == LOGHOGD:
        server = LoghogdServer(workdir, load, loghogd, None)
    elif way == RSYSLOG:
        server = RsyslogServer(workdir, load, find_rsyslogd())
    path = os.path.join(workdir, 'app.log')
    context = multiprocessing.get_context('fork')
    start, results = context.Event(), context.Queue()
    try:
        if server is not None:
            server.__enter__()
            path = server.output_path
        address = server.address(TCP) if server is not None else None
        ranges = split_ranges(records, processes)
        children = [context.Process(target=log_share, args=(way, address, path, part, start, results))
                    for part in ranges]
        cpu_before = probe.cpu_seconds(server.pid) if server is not None else 0.0
        for child in children:
            child.start()
        watcher = probe.OutputWatcher(path, records, [part.stop - 1 for part in ranges])
        began = time.perf_counter()
        start.set()
        arrival = watcher.wait(began + DEADLINE, 10.0, lambda: not any(child.is_alive() for child in children))
        reports = [results.get(timeout=DEADLINE) for _ in children]
        for child in children:
            child.join(DEADLINE)
        watcher.close()
        figures = {
            'seconds': arrival.last_growth - began, 'complete': arrival.complete,
            'app_cpu_us_per_record': 1e6 * sum(report['cpu'] for report in reports) / records,
            'median_emit_us': statistics.median(report['emit_ns'] for report in reports) / 1000,
            'median_call_us': statistics.median(report['call_ns'] for report in reports) / 1000,
            'server_cpu_us_per_record': (1e6 * (probe.cpu_seconds(server.pid) - cpu_before) / records
                                         if server is not None else None),
            'sequence_check': probe.check_sequence(path, records).describe(),
        }
        figures['records_per_s'] = records / max(figures['seconds'], 1e-9)
        return figures
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        shutil.rmtree(workdir, ignore_errors=True)


FIGURES = ('seconds', 'records_per_s', 'app_cpu_us_per_record', 'median_emit_us', 'median_call_us')


def medians(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Each figure's median over the repetitions; the sequence check of the first."""
    summary = {name: statistics.median(run[name] for run in runs) for name in FIGURES}
    summary['sequence_check'] = runs[0]['sequence_check']
    return summary


def table(results: Dict[str, Dict[str, Any]], processes: List[int]) -> str:
    lines = ['%-30s %3s %9s %10s %14s %12s %12s %12s %13s %7s' % (
        'way', 'P', 'seconds', 'records/s', 'app CPU us/rec', 'median emit', 'median call', 'CPU vs File',
        'emit vs File', 'check')]
    for count in processes:
        base = results.get('%s-%d' % (FILE, count))
        for way in WAYS:
            figures = results.get('%s-%d' % (way, count))
            if figures is None:
                continue
            cpu_ratio = figures['app_cpu_us_per_record'] / base['app_cpu_us_per_record'] if base else None
            emit_ratio = figures['median_emit_us'] / base['median_emit_us'] if base else None
            lines.append('%-30s %3d %9.2f %10.0f %14.2f %9.2f us %9.2f us %12s %13s %7s' % (
                LABELS[way], count, figures['seconds'], figures['records_per_s'], figures['app_cpu_us_per_record'],
                figures['median_emit_us'], figures['median_call_us'], '%.2fx' % cpu_ratio if cpu_ratio else '-',
                '%.2fx' % emit_ratio if emit_ratio else '-', figures['sequence_check']))
    return '\n'.join(lines)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=200000)
    parser.add_argument('--processes', default='1,4')
    parser.add_argument('--repetitions', type=int, default=3)
    parser.add_argument('--quick', action='store_true', help='20 000 records, one repetition')
    parser.add_argument('--loghogd', default=os.path.join(ROOT, '.venv', 'bin', 'loghogd'))
    args = parser.parse_args(argv)
    records = 20000 if args.quick else args.records
    repetitions = 1 if args.quick else args.repetitions
    processes = [int(part) for part in args.processes.split(',')]
    ways = [way for way in WAYS if way != RSYSLOG or find_rsyslogd()]
    scratch = tempfile.mkdtemp(prefix='loghog-app-e2e-')
    runs: Dict[str, List[Dict[str, Any]]] = {}
    try:
        for count in processes:
            for _repetition in range(repetitions):
                for way in ways:
                    runs.setdefault('%s-%d' % (way, count), []).append(
                        run_way(way, records, count, scratch, args.loghogd))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print('%d records from P processes, medians of %d, Python %s, the client encodes batches with %s, '
          'loghogd decodes them with %s, load average %.1f'
          % (records, repetitions, sys.version.split()[0], ENCODER_NAME, DECODER_NAME, os.getloadavg()[0]))
    print(table({key: medians(value) for key, value in runs.items()}, processes))
    return 0


if __name__ == '__main__':
    sys.exit(main())
