"""What the harness reads about a server: /proc figures and its output file."""

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional

from benchmarks.workload import seq_marker

READ_SIZE = 4 * 1024 * 1024
POLL_INTERVAL = 0.005


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and of its reaped children, all threads."""
    with open('/proc/%d/stat' % pid, 'rb') as stat:
        fields = stat.read().rsplit(b')', 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf('SC_CLK_TCK')


def memory_kib(pid: int, field: str) -> int:
    """A Vm* line of /proc/<pid>/status (VmRSS, VmHWM) in KiB."""
    with open('/proc/%d/status' % pid) as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError('/proc/%d/status has no %s' % (pid, field))


def settled(read: Callable[[], int], timeout: float, interval: float = 0.1) -> int:
    """`read()` once two reads `interval` apart agree, or its last value at the deadline.

    Taken before clients connect, it lets the server finish closing the
    probe connection of its readiness check; taken after, accepting.
    """
    deadline = time.monotonic() + timeout
    previous = read()
    while time.monotonic() < deadline:
        time.sleep(interval)
        current = read()
        if current == previous:
            return current
        previous = current
    return previous


def open_sockets(pid: int) -> int:
    """Socket descriptors the process holds: its listeners plus every accepted connection."""
    directory = '/proc/%d/fd' % pid
    count = 0
    for name in os.listdir(directory):
        try:
            count += os.readlink(os.path.join(directory, name)).startswith('socket:')
        except FileNotFoundError:
            continue
    return count


def udp_socket_drops(port: int) -> Optional[int]:
    """The kernel's drop counter of the UDP socket bound to 127.0.0.1:port, if any."""
    local = '0100007F:%04X' % port
    with open('/proc/net/udp') as table:
        for line in table:
            fields = line.split()
            if len(fields) > 12 and fields[1] == local:
                return int(fields[-1])
    return None


def udp_receive_errors() -> int:
    """Host-wide UDP RcvbufErrors from /proc/net/snmp (compare before and after)."""
    with open('/proc/net/snmp') as snmp:
        lines = [line.split() for line in snmp if line.startswith('Udp:')]
    header, values = lines[0], lines[1]
    return int(values[header.index('RcvbufErrors')])


@dataclass
class Arrival:
    """How far the output got: lines seen, when the last one arrived, whether all ends showed up."""
    lines: int
    last_growth: float
    complete: bool


class OutputWatcher:
    """Follows a growing output file by reading only its new bytes.

    The run is over when the file holds `expected` lines and the line of the
    last sequence number of every connection; reading new bytes and counting
    newlines keeps the poll cheap next to the server it measures.
    """

    def __init__(self, path: str, expected: int, last_seqs: Iterable[int], json_lines: bool = False) -> None:
        self.path = path
        self.expected = expected
        self._markers = {seq_marker(seq, json_lines) for seq in last_seqs}
        self._overlap = max((len(marker) for marker in self._markers), default=0)
        self._tail = b''
        self._file = None
        self.lines = 0
        self.last_growth = 0.0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def poll(self) -> bool:
        """Read what is new; True when the output is complete."""
        if self._file is None:
            try:
                self._file = open(self.path, 'rb', buffering=0)
            except FileNotFoundError:
                return False
        while True:
            data = self._file.read(READ_SIZE)
            if not data:
                break
            self.last_growth = time.perf_counter()
            self.lines += data.count(b'\n')
            if self._markers:
                window = self._tail + data
                self._markers = {marker for marker in self._markers if marker not in window}
                self._tail = window[-self._overlap:]
        return not self._markers and self.lines >= self.expected

    def wait(self, deadline: float, idle_limit: float, senders_done: Callable[[], bool]) -> Arrival:
        """Poll until complete, the deadline, or no growth for `idle_limit` after the senders finished."""
        started = time.perf_counter()
        while True:
            if self.poll():
                return Arrival(self.lines, self.last_growth, True)
            now = time.perf_counter()
            quiet_since = max(self.last_growth, started)
            if now >= deadline or (senders_done() and now - quiet_since >= idle_limit):
                return Arrival(self.lines, self.last_growth or now, False)
            time.sleep(POLL_INTERVAL)


@dataclass
class SequenceCheck:
    """Every record must appear exactly once; anything else is listed here."""
    expected: int
    seen: int
    missing: int
    duplicated: int
    foreign_lines: int

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.foreign_lines == 0

    def describe(self) -> str:
        if self.exact:
            return 'exact'
        counts = (('missing', self.missing), ('duplicated', self.duplicated), ('other lines', self.foreign_lines))
        return ', '.join('%s %d' % (what, count) for what, count in counts if count)


def record_body(line: bytes, json_lines: bool) -> bytes:
    """The part of an output line that ends with the record's body: the whole
    line, or a JSON line's "message" (b'' when the line is not such an object)."""
    if not json_lines:
        return line
    try:
        message = json.loads(line).get('message')
    except (ValueError, AttributeError):
        return b''
    return message.encode('utf-8') if isinstance(message, str) else b''


def check_sequence(path: str, expected: int, json_lines: bool = False) -> SequenceCheck:
    """Count each sequence number 0..expected-1 in the output file."""
    counts = bytearray(expected)
    overflow: Dict[int, int] = {}
    foreign = 0
    tail_length = len(seq_marker(0)) - 1
    with open(path, 'rb') as output:
        data = output.read()
    for line in data.split(b'\n')[:-1]:
        tail = record_body(line, json_lines)[-tail_length:]
        if not tail.startswith(b'seq=') or not tail[4:].isdigit():
            foreign += 1
            continue
        seq = int(tail[4:])
        if seq >= expected:
            foreign += 1
        elif counts[seq] < 255:
            counts[seq] += 1
        else:
            overflow[seq] = overflow.get(seq, 0) + 1
    missing = counts.count(0)
    duplicated = sum(count - 1 for count in counts if count > 1) + sum(overflow.values())
    return SequenceCheck(expected, expected - missing, missing, duplicated, foreign)

