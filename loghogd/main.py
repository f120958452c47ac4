"""The loghogd command line and the order of start-up; nothing else."""

import argparse
import json
import logging
import logging.handlers
import os
import sys
from typing import List, Optional

from loghogd import __version__
from loghogd.config import Config, ConfigError, load_config
from loghogd.facilities import load_facilities
from loghogd.server import ServerError
from loghogd.service import Service, stats_path
from loghogd.writer import make_dirs

DEFAULT_CONFIG = '/etc/loghogd/loghogd.conf'
LOG_FORMAT = '%(asctime)s loghogd[%(process)d] %(levelname)s %(message)s'


def parse_arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='loghogd', description='LogHog central log server: receives log records over TCP, UDP and '
        'mutual TLS and writes, rotates and compresses one file per facility.')
    parser.add_argument('-c', '--config', default=DEFAULT_CONFIG,
                        help='path of loghogd.conf (default: %(default)s)')
    parser.add_argument('-d', '--daemon', action='store_true',
                        help='detach and run in the background (also [main] daemon = yes)')
    parser.add_argument('--check-config', action='store_true',
                        help='check loghogd.conf and facilities.conf, then exit 0 or 2')
    parser.add_argument('--status', action='store_true', help="print the running daemon's counters")
    parser.add_argument('--version', action='version', version='loghogd %s' % __version__)
    return parser.parse_args(argv)


def setup_logging(config: Config, to_stderr: bool) -> None:
    """The daemon's own log: stderr in the foreground, and the [log] file."""
    logger = logging.getLogger('loghogd')
    logger.setLevel(config.log.level)
    logger.propagate = False
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: List[logging.Handler] = []
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    if config.log.filename:
        make_dirs(os.path.dirname(config.log.filename))
        handlers.append(logging.handlers.WatchedFileHandler(config.log.filename, encoding='utf-8'))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)


def print_status(config: Config) -> int:
    """--status: the counters the running daemon last wrote to its rundir."""
    path = stats_path(config)
    try:
        with open(path, encoding='utf-8') as stream:
            stats = json.load(stream)
    except (OSError, ValueError) as error:
        print('loghogd: no status at %s (is loghogd running?): %s' % (path, error), file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2, sort_keys=True))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    arguments = parse_arguments(argv)
    try:
        config = load_config(arguments.config)
        facilities = load_facilities(config.main.facilities_config)
    except ConfigError as error:
        print('loghogd: %s' % error, file=sys.stderr)
        return 2
    if arguments.check_config:
        print('loghogd: %s and %s are valid (%d facilities)'
              % (config.path, config.main.facilities_config, len(facilities)))
        return 0
    if arguments.status:
        return print_status(config)
    os.umask(0o027)
    setup_logging(config, to_stderr=True)
    try:
        service = Service(config, facilities)
        service.prepare_directories()
        service.bind()
    except (ServerError, OSError) as error:
        print('loghogd: %s' % error, file=sys.stderr)
        return 1
    service.install_signal_handlers()
    return service.run()


if __name__ == '__main__':
    sys.exit(main())
