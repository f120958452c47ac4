"""The harness's command line: its options, their defaults, and what --quick changes.

Kept apart from the harness (benchmarks/harness.py) so that running the
loads does not mix with checking what was asked for: every value is
checked here, before any server starts.
"""

import argparse
import os
from typing import List, Optional

from benchmarks.loads import ALL_SERVERS, IDLE, LOADS_BY_NAME, select_loads
from benchmarks.servers import ROOT

DEFAULT_RECORDS = 1000000
DEFAULT_UDP_RECORDS = 150000
DEFAULT_COOKBOOK_RECORDS = 100000
QUICK_RECORDS = 200000
QUICK_UDP_RECORDS = 50000
QUICK_COOKBOOK_RECORDS = 20000
RESULTS_DIR = os.path.join(ROOT, 'benchmarks', 'results')


def parse_args(argv: Optional[List[str]], description: str) -> argparse.Namespace:
    """The options with their defaults filled in (smaller with --quick); a bad value exits with usage."""
    parser = argparse.ArgumentParser(prog='benchmarks/run', description=description)
    parser.add_argument('--quick', action='store_true',
                        help='small N, one repetition, fewer loads: under 2 minutes')
    parser.add_argument('--records', type=int, help='records per TCP/TLS run (default %d)' % DEFAULT_RECORDS)
    parser.add_argument('--udp-records', type=int, help='records per UDP run (default %d)' % DEFAULT_UDP_RECORDS)
    parser.add_argument('--cookbook-records', type=int,
                        help='at most this many records for the cookbook receiver (default %d), '
                             'which runs at a few percent of the others' % DEFAULT_COOKBOOK_RECORDS)
    parser.add_argument('--repetitions', type=int, help='repetitions per load and server (default 3)')
    parser.add_argument('--loads', help='comma-separated load names '
                                        '(see benchmarks/loads.py); default: all default loads')
    parser.add_argument('--servers', default=','.join(ALL_SERVERS), help='comma-separated servers to run')
    parser.add_argument('--loghogd', default=os.path.join(ROOT, '.venv', 'bin', 'loghogd'),
                        help='the loghogd executable (default: .venv/bin/loghogd)')
    parser.add_argument('--no-install', action='store_true', help='do not apt-get install rsyslog')
    parser.add_argument('--no-ceiling', action='store_true', help='skip the pure-Python ceiling')
    parser.add_argument('--profile', action='store_true',
                        help='one extra loghogd run of --profile-load under py-spy (not in the medians)')
    parser.add_argument('--profile-load', default='tcp-c1', help='the load to profile (default tcp-c1)')
    parser.add_argument('--py-spy', default=os.path.join(ROOT, '.venv', 'bin', 'py-spy'))
    parser.add_argument('--results-dir', default=RESULTS_DIR, help='where the JSON and Markdown go')
    parser.add_argument('--silent', action='store_true', help='no progress lines on stderr')
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {'records': QUICK_RECORDS if quick else DEFAULT_RECORDS,
                'udp_records': QUICK_UDP_RECORDS if quick else DEFAULT_UDP_RECORDS,
                'cookbook_records': QUICK_COOKBOOK_RECORDS if quick else DEFAULT_COOKBOOK_RECORDS,
                'repetitions': 1 if quick else 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in defaults:
        if getattr(args, key) < 1:
            parser.error('--%s must be at least 1' % key.replace('_', '-'))
    args.servers = [name.strip() for name in args.servers.split(',') if name.strip()]
    unknown = [name for name in args.servers if name not in ALL_SERVERS]
    if unknown:
        parser.error('unknown server(s) %s; known: %s' % (', '.join(unknown), ', '.join(ALL_SERVERS)))
    try:
        args.load_list = select_loads(args.loads.split(',') if args.loads else None, quick)
    except ValueError as error:
        parser.error(str(error))
    if args.profile_load not in LOADS_BY_NAME or LOADS_BY_NAME[args.profile_load].transport == IDLE:
        parser.error('--profile-load must name a load with traffic')
    if args.profile and not os.access(args.py_spy, os.X_OK):
        parser.error('--profile needs py-spy (%s): .venv/bin/pip install py-spy' % args.py_spy)
    return args
