"""The running daemon: builds the pieces, then reacts to signals and timers.

Signal handlers only note the signal and wake the loop; reloads, stops and
reports happen here, between loop passes, where nothing is half done.
"""

import json
import logging
import os
import signal
import socket
import time
from typing import Dict, List, Optional

from loghogd.acks import JOURNAL_NAME, AckJournal
from loghogd.atomicfile import replace_file
from loghogd.backups import file_mtime
from loghogd.config import Config, ConfigError, load_config
from loghogd.daemon import unreadable_hint
from loghogd.facilities import Facilities, line_formats, load_facilities
from loghogd.formats import format_changes
from loghogd.listeners import ServerError, make_tls_context
from loghogd.logfile import make_dirs
from loghogd.pipeline import LoopPass
from loghogd.processor import Processor
from loghogd.reporting import RateLimitedReporter
from loghogd.rotation import Rotator
from loghogd.server import Server
from loghogd.stats import Counters, prometheus_text
from loghogd.status import write_json_atomically
from loghogd.streamlinks import StreamLinks, check_facilities
from loghogd.syslog_server import make_syslog_tls_context
from loghogd.wakeup import seconds_until
from loghogd.writer import Writer

log = logging.getLogger('loghogd')

STATS_INTERVAL = 1.0
ACK_CLIENTS_SHOWN = 20
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
STATS_FILE = 'loghogd.stats.json'
LISTENING_FILE = 'listening.json'


def stats_path(config: Config) -> str:
    return os.path.join(config.main.rundir, STATS_FILE)


class Service:
    """loghogd from the moment its config is loaded until it exits."""

    def __init__(self, config: Config, facilities: Facilities) -> None:
        self.config = config
        self.counters = Counters()
        self.reporter = RateLimitedReporter()
        self.writer = Writer(config.main.logdir, self.counters, self.reporter)
        self.processor = Processor(facilities, self.writer, self.counters, self.reporter,
                                   config.server.max_message_size, config.server.peer_rate_limit)
        self.loop_pass = LoopPass(self.processor, self.writer)
        tls_context = make_tls_context(config.server) if config.server.listen_ssl else None
        self.server = Server(config.server, self.loop_pass, self.counters, self.reporter, tls_context)
        if config.server.listen_syslog_tls:
            self.server.syslog_tls_context = make_syslog_tls_context(config.server, make_tls_context)
        self.rotator = Rotator(config, facilities, self.writer, self.counters)
        self.stream_links = StreamLinks(config, self.processor)
        self._signals: List[int] = []
        self._wakeup_pair: Optional[tuple] = None
        self._stats_due = 0.0
        self._config_mtime = file_mtime(config.path)

    def prepare_directories(self) -> None:
        for path in (self.config.main.logdir, self.config.main.workdir, self.config.main.rundir):
            make_dirs(path)

    def open_journal(self) -> None:
        """After the privilege drop: recovery trusts nothing in a journal the daemon's user can write."""
        main = self.config.main
        self.loop_pass.use_journal(AckJournal(os.path.join(main.workdir, JOURNAL_NAME), logdir=main.logdir,
                                              max_clients=self.config.server.max_ack_clients))

    def bind(self) -> List[Dict[str, object]]:
        """Fit the connection pool to the open-file limit, open the listeners, say where they are (ports resolved)."""
        self.server.fit_descriptor_limit()
        bound = self.server.bind()
        write_json_atomically(os.path.join(self.config.main.rundir, LISTENING_FILE), bound)
        return bound

    def install_signal_handlers(self) -> None:
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._wakeup_pair = (reader, writer)
        self.server.add_wakeup(reader)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._note_signal)
        # A daemon holds these blocked while it starts; what arrived meanwhile is handled now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def _note_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then drain the clients and flush (start() has run the rotator's start)."""
        self.stream_links.start(self._wakeup_pair[1] if self._wakeup_pair else None)
        log.info('loghogd %d ready', os.getpid())
        self.server.run(self._between_passes)
        log.info('stopping: reading what connected clients already sent')
        self.server.drain()
        self.loop_pass.close(time.time())
        self.stream_links.pump(time.time())
        self.stream_links.stop()
        self.rotator.stop()
        self._write_stats()
        self.reporter.flush(everything=True)
        log.info('stopped: %d messages written, %d rejected', sum(self.counters.accepted_by_facility.values()),
                 sum(self.counters.rejected_by_reason.values()))
        return 0

    def _between_passes(self, now: float) -> float:
        """Handle the signals that arrived before this pass, each kind once.

        Not those arriving meanwhile: each SIGCHLD starts the next compressor,
        whose exit would otherwise keep this pass going while thousands of
        backups are compressed, and no client would be served.
        """
        arrived, self._signals = self._signals, []
        for signum in dict.fromkeys(arrived):
            self._handle_signal(signum)
        self.server.timed_work(now)
        self.rotator.tick(now)
        if now >= self._stats_due:
            self._write_stats()
            self._stats_due = now + STATS_INTERVAL
        self.reporter.flush()
        if self.stream_links.pump(now):
            return 0.0
        return seconds_until((self.server.next_wakeup(now), self._stats_due - now, self.rotator.next_wakeup(now),
                              self.reporter.next_flush()))

    def _handle_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            log.info('received %s', signal.Signals(signum).name)
            self.server.stopping = True
        elif signum == signal.SIGHUP:
            try:
                self.reload()
            except Exception:
                log.exception('reload failed unexpectedly; carrying on with what was in force')
        elif signum == signal.SIGUSR1:
            log.info('counters: %s', json.dumps(self._write_stats(), sort_keys=True))
        elif signum == signal.SIGCHLD:
            self.rotator.reap()
        elif signum == signal.SIGUSR2:
            self.rotator.rotate_all(time.time())

    def reload(self) -> None:
        """SIGHUP: new facilities, TLS files and internal log; never a stop."""
        for handler in logging.getLogger('loghogd').handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()
        try:
            facilities = load_facilities(self.config.main.facilities_config, self.config.line_format)
            check_facilities(self.config, facilities)
        except ConfigError as error:
            log.error('reload failed, keeping the facilities in force: %s', error)
        else:
            for change in format_changes(line_formats(self.processor.facilities), line_formats(facilities)):
                log.info('%s', change)
            self.server.answer(self.loop_pass.reload(facilities, time.time()))
            self.rotator.set_facilities(facilities)
            log.info('reloaded %s: %d facilities', self.config.main.facilities_config, len(facilities))
        if self.config.server.listen_ssl or self.config.server.listen_syslog_tls:
            try:
                self.server.tls_context = make_tls_context(self.config.server)
                self.server.syslog_tls_context = make_syslog_tls_context(self.config.server, make_tls_context)
            except ServerError as error:
                server = self.config.server
                log.error('reload of the TLS files failed, keeping the old ones: %s%s', error,
                          unreadable_hint((server.pemfile, server.cacert, server.crlfile)))
        self._check_config_changed()

    def _check_config_changed(self) -> None:
        mtime = file_mtime(self.config.path)
        if mtime == self._config_mtime:
            return
        try:
            changed = load_config(self.config.path) != self.config
        except ConfigError as error:
            log.warning('%s changed and is now invalid (%s); a restart would fail', self.config.path, error)
            return
        if changed:
            log.warning('%s changed; restart loghogd to apply it (a reload only rereads facilities)',
                        self.config.path)

    def _write_stats(self) -> Dict[str, object]:
        """Refresh the stats file (for --status) and the Prometheus textfile; return the snapshot."""
        snapshot = self.counters.snapshot()
        snapshot.update(self.stream_links.counters())
        if self.processor.acks is not None:
            snapshot.update(self.processor.acks.status(ACK_CLIENTS_SHOWN))
        try:
            write_json_atomically(stats_path(self.config), snapshot)
        except OSError as error:
            self.reporter.report('stats', logging.WARNING, 'cannot write the stats file: %s', error)
        textfile = self.config.stats.prometheus_textfile
        if textfile is not None:
            try:
                replace_file(textfile, prometheus_text(snapshot).encode('utf-8'), mode=0o644)
            except OSError as error:
                self.reporter.report('prometheus', logging.WARNING, 'cannot write %s: %s', textfile, error)
        return snapshot
