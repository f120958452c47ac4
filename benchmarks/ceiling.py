"""The pure-Python ceiling: the bare work one Python thread must do for the same frames.

No sockets and no files: split the frames, `json.loads` each payload, check
every field's type, build `<time> - <hostname> - <body>` lines and join
them per 256 KiB of input (one read, one write), with the garbage collector
off: the minimal work done the obvious way. loghogd's records/s over this
figure says how the whole daemon, sockets and files included, compares;
it can pass 1.0 because the daemon calls the json C scanner directly,
without json.loads' Python-level layers.
"""

import gc
import json
import multiprocessing
import time
from typing import Dict, Tuple

from benchmarks.servers import die_with_parent
from loghog.protocol import HEADER, HEADER_SIZE

READ_SIZE = 256 * 1024
TIMEOUT = 600.0


def time_prefix(now: float) -> str:
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now)) + '.%06d' % (now % 1 * 1000000)


def process_frames(data: bytes) -> Tuple[int, int]:
    """Handle every frame in `data`; return (records written, output bytes)."""
    unpack_from = HEADER.unpack_from
    loads = json.loads
    written = 0
    output_bytes = 0
    lines = []
    pos = 0
    end = len(data)
    read_end = READ_SIZE
    prefix = time_prefix(time.time())
    while pos < end:
        length, flags = unpack_from(data, pos)
        start = pos + HEADER_SIZE
        pos = start + length
        message = loads(data[start:pos])
        if (type(message) is dict and type(message.get('version')) is int
                and type(message.get('app_id')) is str and type(message.get('module')) is str
                and type(message.get('stamp')) is int and type(message.get('nsecs')) is int
                and type(message.get('body')) is str):
            hostname = message.get('hostname', '-')
            if type(hostname) is str:
                lines.append('%s - %s - %s\n' % (prefix, hostname, message['body']))
                written += 1
        if pos >= read_end or pos >= end:
            output_bytes += len(''.join(lines).encode('utf-8'))
            lines = []
            read_end = pos + READ_SIZE
            prefix = time_prefix(time.time())
    return written, output_bytes


def _measure(data: bytes, connection) -> None:
    die_with_parent()
    gc.collect()
    gc.disable()
    began, cpu_began = time.perf_counter(), time.process_time()
    written, _ = process_frames(data)
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    gc.enable()
    connection.send({'records': written, 'records_per_s': written / max(seconds, 1e-9),
                     'cpu_per_million': cpu_seconds * 1e6 / max(written, 1)})
    connection.close()


def measure_ceiling(data: bytes) -> Dict[str, float]:
    """Run the loop in a fresh forked process (no harness state in its heap).

    Returns records/s and CPU seconds per 1M records: the CPU figure holds
    steadier than the rate when other work shares the machine.
    """
    context = multiprocessing.get_context('fork')
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_measure, args=(data, sender), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(TIMEOUT):
            raise RuntimeError('the ceiling loop did not finish within %.0f s' % TIMEOUT)
        return receiver.recv()
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
