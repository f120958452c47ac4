"""What each line format costs the processor, against the classic line.

    .venv/bin/python -m benchmarks.formats [--records 200000]

Runs the real Processor in-process over frames as the 0.7 client makes them
(one facility per format, lines queued but not written), and prints one
row per format: records/s and CPU seconds per million records (process
time, so other load on the machine inflates it less than wall time).
"""

import argparse
import os
import tempfile
import time
from typing import List, Tuple

from loghog.protocol import encode_payload
from loghogd.facilities import load_facilities
from loghogd.processor import Processor, ReceiveClock
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters
from loghogd.writer import Writer

STYLES = {'classic': '', 'rfc3339': 'format = rfc3339\n', 'json': 'format = json\n',
          'classic-indent': 'multiline = indent\n'}
BATCH = 1000
BODY = 'GET /api/v1/orders/%d 200 1834 bytes in 12.5 ms (user 4711, region eu-central)'


def frames(app_id: str, count: int) -> List[Tuple[int, bytes]]:
    now = time.time()
    return [(0, encode_payload(app_id, 'web.requests', int(now), 123000000, 'web-1', BODY % number))
            for number in range(count)]


def measure(processor: Processor, app_id: str, records: int) -> float:
    """CPU seconds to turn `records` frames of `app_id` into queued lines."""
    batch = frames(app_id, BATCH)
    clock = ReceiveClock()
    started = time.process_time()
    for _ in range(records // BATCH):
        now = time.time()
        processor.process(batch, '127.0.0.1:40000', now, clock.prefix(now))
        for logfile in processor.writer.dirty:
            logfile.pending.clear()
        processor.writer.dirty.clear()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=200000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, 'facilities.conf')
        with open(path, 'w', encoding='utf-8') as conf:
            conf.write(''.join('[%s]\nrotate = daily\nbackup_count = 1\n%s' % (style, options)
                               for style, options in STYLES.items()))
        counters = Counters()
        writer = Writer(os.path.join(directory, 'log'), counters, RateLimitedReporter())
        processor = Processor(load_facilities(path), writer, counters, RateLimitedReporter(), 1 << 20)
        measure(processor, 'classic', BATCH * 5)
        base = None
        print('| format | records/s | CPU s / 1M | vs classic |')
        print('|---|---|---|---|')
        for style in STYLES:
            seconds = min(measure(processor, style, arguments.records) for _ in range(3))
            per_million = seconds / arguments.records * 1e6
            base = base or per_million
            print('| `%s` | %s | %.2f | %.2fx |' % (style, '{:,}'.format(int(arguments.records / seconds)).replace(',', ' '),
                                                    per_million, per_million / base))


if __name__ == '__main__':
    main()
