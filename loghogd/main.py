"""The loghogd command line and the order of start-up; nothing else."""

import argparse
import grp
import json
import logging
import logging.handlers
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from loghogd import __version__, safefs
from loghogd.config import Config, ConfigError, facilities_path, load_config
from loghogd.daemon import (DaemonError, PidLock, StartupReport, drop_privileges, process_alive, read_pidfile,
                            resolve_user, run_detached, unreadable_hint)
from loghogd.facilities import Facilities, load_facilities
from loghogd.listeners import ServerError
from loghogd.logfile import make_dirs
from loghogd.ownership import hand_over
from loghogd.preflight import check_targets
from loghogd.service import HANDLED_SIGNALS, Service, stats_path
from loghogd.status import format_status
from loghogd.streamlinks import check_facilities

DEFAULT_CONFIG = '/etc/loghogd/loghogd.conf'
LOG_FORMAT = '%(asctime)s loghogd[%(process)d] %(levelname)s %(message)s'
STATUS_WAIT = 5.0
STATUS_NOT_RUNNING = 3
STATUS_UNKNOWN = 4
START_ERRORS = (DaemonError, ServerError, OSError)

log = logging.getLogger('loghogd')


def parse_arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='loghogd', description='LogHog central log server: receives log records over TCP, UDP and '
        'mutual TLS and writes, rotates and compresses one file per facility.')
    parser.add_argument('-c', '--config', default=DEFAULT_CONFIG,
                        help='path of loghogd.conf (default: %(default)s)')
    parser.add_argument('-d', '--daemon', action='store_true',
                        help='detach and run in the background (also [main] daemon = yes); exits 0 once '
                        'the daemon accepts records, else prints its start-up error and exits 1')
    parser.add_argument('--check-config', action='store_true',
                        help='check loghogd.conf, facilities.conf and what they name (TLS files, directories, '
                        'commands); list every problem, then exit 0 or 2')
    parser.add_argument('--status', action='store_true',
                        help="print the running daemon's counters (exit 3 if it is not running, 4 if "
                        "this user may not read them)")
    parser.add_argument('--json', action='store_true', help='with --status: print the counters as JSON')
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
        try:
            handlers.append(InternalLogHandler(config.log.filename, encoding='utf-8'))
        except OSError as error:
            raise DaemonError('cannot open the internal log [log] filename = %s: %s'
                              % (config.log.filename, error.strerror or error)) from None
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)


class InternalLogHandler(logging.handlers.WatchedFileHandler):
    """The [log] file, opened without following a link.

    Root opens it before the privilege drop, in a directory that may be
    the daemon user's: a link planted there must not make root append to
    another file.
    """

    def _open(self):  # type: ignore[no-untyped-def]
        fd = safefs.open_file(os.path.dirname(self.baseFilename), self.baseFilename,
                              os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


def print_status(config: Config, as_json: bool) -> int:
    """--status: the running daemon's counters, from the stats file it refreshes every second.

    Waits (bounded) for a refresh made after this call, so the numbers
    include everything the daemon had processed when --status started.
    A user who may not look into the rundir learns that, not "not running".
    """
    try:
        return _print_status(config, as_json)
    except PermissionError as error:
        print('loghogd: cannot read the status: %s: permission denied; run --status as root or as a member '
              'of %s' % (error.filename, _group_of(os.path.dirname(error.filename or config.main.pidfile))),
              file=sys.stderr)
        return STATUS_UNKNOWN


def _group_of(path: str) -> str:
    try:
        gid = os.stat(path).st_gid
    except OSError:
        return 'the group of %s' % path
    try:
        return 'group %s (the group of %s)' % (grp.getgrgid(gid).gr_name, path)
    except KeyError:
        return 'group %d (the group of %s)' % (gid, path)


def _print_status(config: Config, as_json: bool) -> int:
    pidfile = config.main.pidfile
    try:
        with open(pidfile, 'rb'):
            pass
    except (FileNotFoundError, IsADirectoryError):
        pass
    pid = read_pidfile(pidfile)
    if pid is None or not process_alive(pid):
        if pid is not None:
            reason = 'process %d from %s is gone' % (pid, pidfile)
        elif os.path.exists(pidfile):
            reason = 'no PID readable in %s' % pidfile
        else:
            reason = 'no PID file %s' % pidfile
        print('loghogd is not running (%s)' % reason, file=sys.stderr)
        return STATUS_NOT_RUNNING
    path = stats_path(config)
    stats, fresh = _wait_for_stats(path, pid, time.time(), STATUS_WAIT)
    if stats is None:
        print('loghogd: PID %d runs, but %s holds no counters of it (not readable, or another '
              'daemon wrote it)' % (pid, path), file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(stats, indent=2, sort_keys=True) + '\n' if as_json else format_status(stats))
    if not fresh:
        print('loghogd: warning: PID %d did not refresh %s within %.0f s; these counters are %.0f s old'
              % (pid, path, STATUS_WAIT, time.time() - stats.get('time', 0)), file=sys.stderr)
        return 1
    return 0


def _wait_for_stats(path: str, pid: int, since: float, timeout: float) -> Tuple[Optional[Dict[str, Any]], bool]:
    """(the newest counters of `pid`, whether they were written after `since`)."""
    deadline = time.monotonic() + timeout
    stats = None
    while True:
        try:
            with open(path, encoding='utf-8') as stream:
                candidate = json.load(stream)
            if candidate.get('pid') == pid:
                stats = candidate
        except PermissionError:
            raise
        except (OSError, ValueError, AttributeError):
            pass
        if stats is not None and stats.get('time', 0) >= since:
            return stats, True
        if time.monotonic() > deadline:
            return stats, False
        time.sleep(0.05)


def start(config: Config, facilities: Facilities, foreground: bool) -> Tuple[Service, PidLock]:
    """Everything before serving, in the order that makes it safe.

    The PID lock comes first (a second loghogd says who runs), then the
    directories, the TLS context and the sockets, all as the starting user
    (root may bind low ports and read the key); privileges are dropped
    next. What reads files the daemon's user can write (the
    acknowledgement journal, whose recovery may truncate log files) comes
    after the drop. Last, the rotator finishes what a crash interrupted,
    so that `-d` reports ready only once the daemon can serve. Raises one
    of START_ERRORS with a message for the operator.
    """
    os.umask(0o027)
    setup_logging(config, to_stderr=foreground)
    account = resolve_user(config.main.user)
    lock = PidLock(config.main.pidfile)
    lock.acquire()
    try:
        service = Service(config, facilities)
        service.prepare_directories()
        service.bind()
        if account is not None:
            main = config.main
            hand_over(account, [main.workdir], [main.logdir, config.log.filename], main.rundir, main.pidfile)
            drop_privileges(account)
            _warn_unreadable_for_reload(config)
        service.install_signal_handlers()
        service.open_journal()
        service.rotator.start(time.time())
    except BaseException:
        lock.release()
        raise
    return service, lock


def _warn_unreadable_for_reload(config: Config) -> None:
    """Files a SIGHUP rereads must stay readable after the drop; say so at start, not at 3 a.m."""
    server = config.server
    tls_files = [server.pemfile, server.cacert, server.crlfile] if server.listen_ssl else []
    hint = unreadable_hint([config.main.facilities_config, config.path] + tls_files)
    if hint:
        log.warning('a reload (SIGHUP) will fail%s', hint)


def serve(service: Service, lock: PidLock) -> int:
    """Run until stopped; a crash is written to the internal log, which outlives /dev/null stderr."""
    try:
        return service.run()
    except Exception:
        log.exception('loghogd failed')
        raise
    finally:
        lock.release()


def run_foreground(config: Config, facilities: Facilities) -> int:
    try:
        service, lock = start(config, facilities, foreground=True)
    except START_ERRORS as error:
        print('loghogd: %s' % error, file=sys.stderr)
        return 1
    return serve(service, lock)


def run_daemon(config: Config, facilities: Facilities) -> int:
    """-d: this process exits once the detached daemon is ready (0) or failed (1)."""
    def in_daemon(report: StartupReport) -> int:
        try:
            service, lock = start(config, facilities, foreground=False)
        except START_ERRORS as error:
            report.failed(str(error))
            log.error('cannot start: %s', error)
            return 1
        report.ready()
        return serve(service, lock)
    return run_detached(in_daemon, HANDLED_SIGNALS)


def check_config(path: str) -> int:
    """--check-config: both files, then what they point at; every problem listed, exit 2 if any."""
    errors: List[str] = []
    config = facilities = None
    try:
        config = load_config(path)
    except ConfigError as error:
        errors.extend(str(error).split('\n'))
    try:
        facilities = (load_facilities(config.main.facilities_config, config.line_format) if config
                      else load_facilities(facilities_path(path)))
    except ConfigError as error:
        errors.extend(str(error).split('\n'))
    warnings: List[str] = []
    if config is not None and facilities is not None:
        errors, warnings = check_targets(config, facilities)
    for warning in warnings:
        print('loghogd: warning: %s' % warning, file=sys.stderr)
    for error in errors:
        print('loghogd: %s' % error, file=sys.stderr)
    if errors:
        print('loghogd: %d problem%s found' % (len(errors), '' if len(errors) == 1 else 's'), file=sys.stderr)
        return 2
    print('loghogd: %s and %s are valid (%d facilities)'
          % (config.path, config.main.facilities_config, len(facilities)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.check_config:
        return check_config(arguments.config)
    try:
        config = load_config(arguments.config)
        facilities = load_facilities(config.main.facilities_config, config.line_format)
        check_facilities(config, facilities)
    except ConfigError as error:
        print('loghogd: %s' % str(error).replace('\n', '\nloghogd: '), file=sys.stderr)
        return 2
    if arguments.status:
        return print_status(config, arguments.json)
    if arguments.daemon or config.main.daemon:
        return run_daemon(config, facilities)
    return run_foreground(config, facilities)


if __name__ == '__main__':
    sys.exit(main())
