"""Run every load against loghogd, rsyslog and the cookbook receiver; print one table.

    benchmarks/run [--quick] [--records N] [--udp-records N] [--repetitions R]
                   [--loads a,b] [--servers loghogd,rsyslog,cookbook] [--profile]

Each (load, server, repetition) gets a fresh server in its own directory on
127.0.0.1. Generators connect, pre-built bytes in hand, and all start on one
signal; the clock stops when the output file holds every record's line
(the last sequence number of every connection included). Loads and
servers are interleaved, repetition by repetition, so that drift on a
shared machine hits all of them alike.
"""

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import ceiling, probe, pyspy, report
from benchmarks.generator import SenderGroup, SenderSpec, TlsClient
from benchmarks.harness_options import parse_args
from benchmarks.loads import BATCH_RECORDS, COOKBOOK, IDLE, JSON, LOADS_BY_NAME, LOGHOGD, RSYSLOG, TCP, TLS, UDP, Load
from benchmarks.servers import (Certificates, CookbookServer, LoghogdServer, RsyslogServer, Server, ServerError,
                                find_rsyslogd, wait_until)
from benchmarks.workload import WIRE_LOGHOG, RecordCache, loghog_batches, loghog_records, split_ranges
from loghogd.batchdecode import DECODER_NAME
from loghogd.inflating import INFLATER_NAME

TCP_IDLE_LIMIT = 20.0
UDP_IDLE_LIMIT = 1.5
IDLE_SETTLE_TIMEOUT = 3.0
IDLE_BATCH = 50
NOFILE_WANTED = 8192


def run_timeout(records: int) -> float:
    """The most one run may take: generous for the slowest server, but bounded."""
    return 60.0 + records / 5000.0


def discard_output(directory: str) -> None:
    """Delete a finished run's files and flush what is still dirty: the kernel writing
    back hundreds of MB from one run would take the CPU from the server of the next."""
    shutil.rmtree(directory, ignore_errors=True)
    os.sync()


class Bench:
    """One harness run: shared records, certificates and a scratch directory."""

    def __init__(self, args: argparse.Namespace, scratch: str) -> None:
        self.args = args
        self.scratch = scratch
        self.cache = RecordCache()
        self.runs: List[Dict[str, Any]] = []
        self.skipped: Dict[Tuple[str, str], str] = {}
        self.unavailable: Dict[str, str] = {}
        self._run_number = 0
        self._certificates: Optional[Certificates] = None
        self._certificate_error: Optional[str] = None
        self.profile: Optional[Dict[str, Any]] = None
        self.ceiling_runs: List[Dict[str, float]] = []
        self._ceiling_data: Optional[bytes] = None
        self._ack_payloads: Dict[Tuple[str, Tuple[range, ...]], List[List[bytes]]] = {}
        self.rsyslogd = find_rsyslogd()

    def record_count(self, server: str, load: Load) -> int:
        count = self.args.udp_records if load.transport == UDP else self.args.records
        return min(count, self.args.cookbook_records) if server == COOKBOOK else count

    def check_servers(self, servers: Sequence[str]) -> None:
        """Note which servers cannot run here, so their cells say why instead of failing the run."""
        if LOGHOGD in servers:
            try:
                done = subprocess.run([self.args.loghogd, '--help'], capture_output=True, timeout=30)
                if done.returncode != 0:
                    self.unavailable[LOGHOGD] = '%s --help failed: %s' % (
                        self.args.loghogd, done.stderr.decode('utf-8', 'replace').strip()[-300:])
            except (OSError, subprocess.TimeoutExpired) as error:
                self.unavailable[LOGHOGD] = 'cannot run %s: %s' % (self.args.loghogd, error)
        if RSYSLOG in servers and self.rsyslogd is None:
            self.unavailable[RSYSLOG] = 'rsyslogd is not installed'

    def certificates(self) -> Certificates:
        if self._certificates is None and self._certificate_error is None:
            certificates = Certificates(os.path.join(self.scratch, 'certs'), os.path.dirname(self.args.loghogd))
            try:
                certificates.ensure()
                self._certificates = certificates
            except ServerError as error:
                self._certificate_error = str(error)
        if self._certificates is None:
            raise ServerError('no TLS certificates: %s' % self._certificate_error)
        return self._certificates

    def make_server(self, name: str, load: Load) -> Server:
        self._run_number += 1
        workdir = os.path.join(self.scratch, 'runs', '%03d-%s-%s' % (self._run_number, load.name, name))
        if name == LOGHOGD:
            certificates = self.certificates() if load.transport == TLS else None
            return LoghogdServer(workdir, load, self.args.loghogd, certificates)
        if name == RSYSLOG:
            return RsyslogServer(workdir, load, self.rsyslogd)
        return CookbookServer(workdir, load)

    def payloads(self, wire: str, load: Load, count: int) -> List[Sequence[bytes]]:
        """Each connection's records, built (or taken from the cache) before the server starts."""
        ranges = split_ranges(count, load.connections)
        if load.batch and wire == WIRE_LOGHOG:
            return self.batch_payloads(load, ranges)
        if load.ack:
            return self.ack_payloads(load, ranges)
        records = self.cache.records(wire, count, load.transport == UDP, load.compress, load.signed)
        return [records[part.start:part.stop] for part in ranges]

    def batch_payloads(self, load: Load, ranges: Sequence[range]) -> List[List[bytes]]:
        """Each connection's records as batch frames (one client_id per connection with acks), built once."""
        key = ('batch-' + load.name, tuple(ranges))
        if key not in self._ack_payloads:
            self._ack_payloads[key] = [loghog_batches(part.start, len(part), BATCH_RECORDS, load.compress,
                                                      load.signed, 'bench%d' % index if load.ack else None)
                                       for index, part in enumerate(ranges)]
        return self._ack_payloads[key]

    def sender_specs(self, server: Server, load: Load, payloads: List[Sequence[bytes]],
                     counts: List[int]) -> List[SenderSpec]:
        datagram = load.transport == UDP
        tls = None
        if load.transport == TLS:
            certificates = self.certificates()
            tls = TlsClient(certificates.cacert, certificates.client_pem)
        timeout = run_timeout(sum(counts))
        rate = load.rate / load.connections if load.rate else None
        return [SenderSpec(address=server.address(load.transport), payload=part if datagram else b''.join(part),
                           records=records, datagram=datagram, rate=rate, tls=tls, ack=load.ack,
                           timeout=timeout)
                for part, records in zip(payloads, counts)]

    def ack_payloads(self, load: Load, ranges: Sequence[range]) -> List[List[bytes]]:
        """One client_id per connection with its own seq from 1, built once per load."""
        key = (load.name, tuple(ranges))
        if key not in self._ack_payloads:
            self._ack_payloads[key] = [loghog_records(part.start, len(part), load.compress, load.signed,
                                                      client_id='bench%d' % index)
                                       for index, part in enumerate(ranges)]
        return self._ack_payloads[key]

    def run_traffic(self, name: str, load: Load, check: bool, profile: bool = False) -> Dict[str, Any]:
        count = self.record_count(name, load)
        server = self.make_server(name, load)
        payloads = self.payloads(server.wire, load, count)
        last_seqs = [part.stop - 1 for part in split_ranges(count, load.connections) if len(part)]
        with server:
            counts = [len(part) for part in split_ranges(count, load.connections)]
            senders = SenderGroup(self.sender_specs(server, load, payloads, counts))
            watcher = probe.OutputWatcher(server.output_path, count, last_seqs, load.line_format == JSON)
            try:
                figures = self.measure(server, load, count, senders, watcher, profile)
            finally:
                watcher.close()
                senders.close()
        figures.update({'records': count, 'connections': load.connections})
        if load.ack:
            figures['acked_pct'] = 100.0 * sum(done.get('acked', 0) for done in senders.done.values()) / count
        if senders.errors:
            figures['generator_errors'] = senders.errors
        if check:
            figures['sequence_check'] = probe.check_sequence(server.output_path, count,
                                                             load.line_format == JSON).describe() \
                if os.path.exists(server.output_path) else 'no output file'
        discard_output(server.workdir)
        return figures

    def measure(self, server: Server, load: Load, count: int, senders: SenderGroup,
                watcher: probe.OutputWatcher, profile: bool) -> Dict[str, Any]:
        """From the start signal to the last line: rate, delivery, the server's CPU and memory."""
        senders.launch()
        udp_errors = probe.udp_receive_errors()
        cpu_before = probe.cpu_seconds(server.pid)
        began = time.perf_counter()
        senders.start_signal.set()
        profiler = self.start_profiler(server, load) if profile else None
        try:
            def senders_done() -> bool:
                server.check_alive()
                return senders.all_sent()

            idle_limit = UDP_IDLE_LIMIT if load.transport == UDP else TCP_IDLE_LIMIT
            arrival = watcher.wait(began + run_timeout(count), idle_limit, senders_done)
            cpu = probe.cpu_seconds(server.pid) - cpu_before
            figures: Dict[str, Any] = {'peak_rss_mib': probe.memory_kib(server.pid, 'VmHWM') / 1024.0}
            if load.transport == UDP:
                figures['kernel_drops'] = probe.udp_socket_drops(server.ports[UDP])
                figures['host_udp_rcvbuf_errors'] = probe.udp_receive_errors() - udp_errors
            senders.finish(10.0)
            if profiler is not None:
                figures['profile'] = pyspy.stop_and_summarize(*profiler)
        finally:
            if profiler is not None and profiler[0].poll() is None:
                profiler[0].kill()
                profiler[0].wait(10)
        delivered = min(arrival.lines, count)
        elapsed = max(arrival.last_growth - began, 1e-9)
        slowest_sender = max((sent.get('send_seconds', 0) for sent in senders.sent.values()), default=0)
        figures.update({
            'seconds': elapsed,
            'records_per_s': delivered / elapsed,
            'delivered_pct': 100.0 * delivered / count,
            'complete': arrival.complete,
            'cpu_per_million': cpu * 1e6 / max(delivered, 1),
            'generator_records_per_s': count / max(slowest_sender, 1e-9),
        })
        return figures

    def run_idle(self, name: str, load: Load) -> Dict[str, Any]:
        server = self.make_server(name, load)
        connections: List[socket.socket] = []
        with server:
            try:
                base_rss = probe.memory_kib(server.pid, 'VmRSS')
                base_sockets = probe.settled(lambda: probe.open_sockets(server.pid), IDLE_SETTLE_TIMEOUT)
                while len(connections) < load.connections:
                    self.connect_batch(server, connections, min(IDLE_BATCH, load.connections - len(connections)))
                    wait_until(lambda: probe.open_sockets(server.pid) >= base_sockets + len(connections), 30.0,
                               '%s to accept %d connections' % (name, len(connections)))
                idle_rss = probe.settled(lambda: probe.memory_kib(server.pid, 'VmRSS'), IDLE_SETTLE_TIMEOUT)
                server.check_alive()
            finally:
                for connection in connections:
                    connection.close()
        return {'idle_rss_mib': idle_rss / 1024.0, 'base_rss_mib': base_rss / 1024.0,
                'connections': load.connections}

    @staticmethod
    def connect_batch(server: Server, connections: List[socket.socket], count: int) -> None:
        """Clients arrive in batches the server accepts before the next: a burst of a thousand
        connects could overflow the listen backlog, and a handshake dropped there only
        completes when the kernel retransmits it, seconds later."""
        for _ in range(count):
            connections.append(socket.create_connection(server.address(TCP), timeout=10))

    def start_profiler(self, server: Server, load: Load) -> Optional[Tuple[subprocess.Popen, str]]:
        """py-spy, sampling the running server from outside, writing collapsed stacks."""
        output = os.path.join(self.scratch, 'profile-%s.txt' % load.name)
        process = subprocess.Popen([self.args.py_spy, 'record', '--pid', str(server.pid), '--format', 'raw',
                                    '--output', output, '--rate', '100', '--nonblocking'],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return process, output

    def run_one(self, name: str, load: Load, repetition: int) -> None:
        entry: Dict[str, Any] = {'load': load.name, 'server': name, 'repetition': repetition, 'figures': {}}
        started = time.monotonic()
        try:
            if load.transport == IDLE:
                entry['figures'] = self.run_idle(name, load)
            else:
                entry['figures'] = self.run_traffic(name, load, check=repetition == 0)
        except (ServerError, OSError) as error:
            entry['error'] = str(error)
        entry['wall_seconds'] = time.monotonic() - started
        self.runs.append(entry)
        self.say(describe_run(entry))

    def run_ceiling(self) -> None:
        """One measurement of the pure-Python loop over the same frames the TCP loads send."""
        if self._ceiling_data is None:
            self._ceiling_data = b''.join(self.cache.records(WIRE_LOGHOG, self.args.records))
        self.ceiling_runs.append(ceiling.measure_ceiling(self._ceiling_data))
        self.say('ceiling #%d: %s records/s, %.2f CPU s/1M' % (
            len(self.ceiling_runs), report.format_value(self.ceiling_runs[-1]['records_per_s'], 'rate'),
            self.ceiling_runs[-1]['cpu_per_million']))

    def run(self, loads: Sequence[Load], servers: Sequence[str]) -> None:
        """Repetition by repetition, every load on every server in turn, and the ceiling once per repetition.

        Drift on a shared machine then hits every load alike, not only the
        servers of one load: the notes compare loads with each other (what
        ACKs, zlib or TLS cost), and those ratios need it as much.
        """
        self.check_servers(servers)
        chosen: Dict[str, List[str]] = {}
        for load in loads:
            chosen[load.name] = []
            for name in load.servers:
                if name not in servers:
                    continue
                if name in self.unavailable:
                    self.skipped[(load.name, name)] = self.unavailable[name]
                else:
                    chosen[load.name].append(name)
        for repetition in range(self.args.repetitions):
            if not self.args.no_ceiling:
                self.run_ceiling()
            for load in loads:
                for name in chosen[load.name]:
                    self.run_one(name, load, repetition)
        if self.args.profile and LOGHOGD not in self.unavailable:
            self.run_profile(LOADS_BY_NAME[self.args.profile_load])

    def run_profile(self, load: Load) -> None:
        """One extra loghogd run under py-spy, kept out of the medians since sampling slows it."""
        try:
            figures = self.run_traffic(LOGHOGD, load, check=False, profile=True)
            self.profile = dict(figures.get('profile', {}), load=load.name,
                                records_per_s=figures['records_per_s'])
        except (ServerError, OSError) as error:
            self.profile = {'error': str(error), 'load': load.name}
        self.say('profiled %s under py-spy' % load.name)

    def say(self, text: str) -> None:
        if not self.args.silent:
            print(text, file=sys.stderr, flush=True)


def describe_run(entry: Dict[str, Any]) -> str:
    head = '%s / %s #%d' % (entry['load'], entry['server'], entry['repetition'] + 1)
    if entry.get('error'):
        return '%s: error: %s' % (head, entry['error'])
    figures = entry['figures']
    if 'idle_rss_mib' in figures:
        return '%s: %.1f MiB RSS with %d idle connections' % (head, figures['idle_rss_mib'], figures['connections'])
    return '%s: %s records/s, %.2f%% delivered, %.2f CPU s/1M, %.1f MiB peak%s' % (
        head, report.format_value(figures['records_per_s'], 'rate'), figures['delivered_pct'],
        figures['cpu_per_million'], figures['peak_rss_mib'],
        ', check: %s' % figures['sequence_check'] if 'sequence_check' in figures else '')


def raise_file_limit(wanted: int = NOFILE_WANTED) -> None:
    """The idle-connections load holds a thousand sockets in this process (and servers inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def install_rsyslog() -> None:
    """apt-get install rsyslog when rsyslogd is missing (as root, or through sudo)."""
    if find_rsyslogd() is not None:
        return
    sudo = [] if os.geteuid() == 0 else ['sudo']
    print('rsyslogd not found: installing the rsyslog package with apt-get', file=sys.stderr)
    environment = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    subprocess.run(sudo + ['apt-get', 'install', '-y', '-q', 'rsyslog'], env=environment, check=False,
                   timeout=600)


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops its servers and generators."""
    sys.exit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status 1 when a run failed or a stream lost records, so scripts can trust a 0."""
    args = parse_args(argv, __doc__.split('\n')[0])
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    raise_file_limit()
    if RSYSLOG in args.servers and not args.no_install:
        install_rsyslog()
    meta: Dict[str, Any] = {
        'records': args.records, 'udp_records': args.udp_records, 'cookbook_records': args.cookbook_records,
        'repetitions': args.repetitions, 'quick': args.quick, 'cpus': os.cpu_count(),
        'started': datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ'),
        'python': sys.version.split()[0], 'loadavg_before': os.getloadavg()[0], 'batch_decoder': DECODER_NAME,
        'inflater': INFLATER_NAME}
    scratch = tempfile.mkdtemp(prefix='loghog-bench-')
    try:
        bench = Bench(args, scratch)
        bench.run(args.load_list, args.servers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta['loadavg_after'] = os.getloadavg()[0]
    report.publish(args.results_dir, bench.runs, bench.ceiling_runs, bench.skipped, bench.profile, meta)
    failed = any(run.get('error') for run in bench.runs) or report.stream_losses(bench.runs)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
