"""Counters of what the daemon did, and rate-limited reports of what went wrong.

Counters are plain integers bumped on the hot path; turning them into a
snapshot (for --status, SIGUSR1 and Prometheus) happens only when asked.
"""

import collections
import json
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional

from loghogd import __version__
from loghogd.atomicfile import replace_file

log = logging.getLogger('loghogd')


class Counters:
    """Exact counts since start-up; `snapshot()` gives them as plain data."""

    def __init__(self) -> None:
        self.started = time.time()
        self.accepted_by_facility: Dict[str, int] = collections.Counter()
        self.rejected_by_reason: Dict[str, int] = collections.Counter()
        self.rejected_by_app: Dict[str, int] = collections.Counter()
        self.bytes_received = 0
        self.frames_received = 0
        self.connections_accepted = 0
        self.connections_open = 0
        self.connections_refused = 0
        self.tls_failures = 0
        self.connections_refused_per_address = 0
        self.connections_closed_idle = 0
        self.frames_timed_out = 0
        self.connections_closed_buffer_full = 0
        self.buffered_bytes = 0
        self.inflated_bytes = 0
        self.inflate_limited = 0
        self.rotations = 0
        self.compressions = 0
        self.compression_failures = 0
        self.write_errors = 0
        self.unsafe_paths_refused = 0
        self.messages_dropped_unwritable = 0
        self.duplicates_dropped = 0
        self.acks_sent = 0
        self.syslog_messages_by_listener: Dict[str, int] = collections.Counter()
        self.syslog_truncated_by_listener: Dict[str, int] = collections.Counter()

    def reject(self, reason: str, app_id: Optional[str] = None) -> None:
        self.rejected_by_reason[reason] += 1
        if app_id is not None:
            self.rejected_by_app[app_id] += 1

    def snapshot(self) -> Dict[str, Any]:
        accepted = dict(self.accepted_by_facility)
        by_app: Dict[str, int] = collections.Counter()
        for name, count in accepted.items():
            by_app[name.split(':', 1)[0]] += count
        now = time.time()
        return {
            'version': __version__,
            'pid': os.getpid(),
            'time': now,
            'started': self.started,
            'uptime_seconds': round(now - self.started, 3),
            'accepted': sum(accepted.values()),
            'accepted_by_app': dict(by_app),
            'accepted_by_facility': accepted,
            'rejected': sum(self.rejected_by_reason.values()),
            'rejected_by_reason': dict(self.rejected_by_reason),
            'rejected_by_app': dict(self.rejected_by_app),
            'bytes_received': self.bytes_received,
            'frames_received': self.frames_received,
            'connections_accepted': self.connections_accepted,
            'connections_open': self.connections_open,
            'connections_refused': self.connections_refused,
            'tls_failures': self.tls_failures,
            'connections_refused_per_address': self.connections_refused_per_address,
            'connections_closed_idle': self.connections_closed_idle,
            'frames_timed_out': self.frames_timed_out,
            'connections_closed_buffer_full': self.connections_closed_buffer_full,
            'buffered_bytes': self.buffered_bytes,
            'inflated_bytes': self.inflated_bytes,
            'inflate_limited': self.inflate_limited,
            'rotations': self.rotations,
            'compressions': self.compressions,
            'compression_failures': self.compression_failures,
            'write_errors': self.write_errors,
            'unsafe_paths_refused': self.unsafe_paths_refused,
            'messages_dropped_unwritable': self.messages_dropped_unwritable,
            'duplicates_dropped': self.duplicates_dropped,
            'acks_sent': self.acks_sent,
            'syslog_messages_by_listener': dict(self.syslog_messages_by_listener),
            'syslog_truncated_by_listener': dict(self.syslog_truncated_by_listener),
        }


def write_json_atomically(path: str, data: Any) -> None:
    """Readers never see half a file: write a temporary one, then rename it."""
    replace_file(path, (json.dumps(data, indent=1, sort_keys=True) + '\n').encode('utf-8'))


# (snapshot key, metric name, type, help, label name of a by-key mapping)
PROMETHEUS_METRICS = (
    ('accepted_by_facility', 'messages_accepted_total', 'counter',
     'Messages written to a log file, by application and facility.', 'facility'),
    ('rejected_by_reason', 'messages_rejected_total', 'counter',
     'Messages or frames rejected, by reason.', 'reason'),
    ('rejected_by_app', 'messages_rejected_by_app_total', 'counter',
     'Messages of a configured application rejected (e.g. bad signature), by application.', 'app'),
    ('bytes_received', 'received_bytes_total', 'counter', 'Bytes read from clients (TCP, UDP, TLS).', None),
    ('frames_received', 'received_frames_total', 'counter', 'Complete frames read from clients.', None),
    ('connections_accepted', 'connections_accepted_total', 'counter', 'Client connections accepted.', None),
    ('connections_open', 'connections_open', 'gauge', 'Client connections open now.', None),
    ('connections_refused', 'connections_refused_total', 'counter',
     'Client connections refused (max_connections, out of file descriptors).', None),
    ('tls_failures', 'tls_handshake_failures_total', 'counter', 'TLS handshakes that failed or timed out.', None),
    ('connections_refused_per_address', 'connections_refused_per_address_total', 'counter',
     'Client connections refused because their address had max_connections_per_address open.', None),
    ('connections_closed_idle', 'connections_closed_idle_total', 'counter',
     'Connections closed without a complete frame within idle_timeout.', None),
    ('frames_timed_out', 'frames_timed_out_total', 'counter',
     'Connections closed because a started frame was not finished within frame_timeout.', None),
    ('connections_closed_buffer_full', 'connections_closed_buffer_full_total', 'counter',
     'Connections closed at max_buffered_bytes or max_buffered_bytes_per_peer.', None),
    ('buffered_bytes', 'buffered_bytes', 'gauge', 'Bytes held now for unfinished or waiting frames.', None),
    ('inflated_bytes', 'inflated_bytes_total', 'counter', 'Bytes inflated from compressed frames.', None),
    ('inflate_limited', 'inflate_limited_total', 'counter',
     'Times a peer reached max_inflated_bytes_per_second (its compressed frames waited or were dropped).', None),
    ('rotations', 'rotations_total', 'counter', 'Log files rotated.', None),
    ('compressions', 'compressions_total', 'counter', 'Rotated files compressed.', None),
    ('compression_failures', 'compression_failures_total', 'counter', 'Compressions that failed.', None),
    ('write_errors', 'write_errors_total', 'counter', 'Failed writes to log files (lines kept and retried).',
     None),
    ('unsafe_paths_refused', 'unsafe_paths_refused_total', 'counter',
     'Log files, directories and backups left alone because a link or special file was in their place.', None),
    ('messages_dropped_unwritable', 'messages_dropped_unwritable_total', 'counter',
     'Lines dropped because their file stayed unwritable and the memory buffer was full.', None),
    ('duplicates_dropped', 'duplicates_dropped_total', 'counter',
     'Acknowledged-delivery records dropped because they were already written (a client resent them).', None),
    ('acks_sent', 'acks_sent_total', 'counter', 'Acknowledgement frames sent to clients.', None),
    ('syslog_messages_by_listener', 'syslog_messages_total', 'counter',
     'Syslog messages received, by listener kind (udp, tcp, tls).', 'listener'),
    ('syslog_truncated_by_listener', 'syslog_truncated_total', 'counter',
     'Syslog messages over max_message_size, cut to it and written, by listener kind.', 'listener'),
    ('started', 'start_time_seconds', 'gauge', 'When this loghogd started, in seconds since the epoch.', None),
)
PROMETHEUS_PREFIX = 'loghogd_'
_PROMETHEUS_NAME = re.compile(r'[^a-zA-Z0-9_]')


def prometheus_label_value(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def prometheus_text(snapshot: Dict[str, Any]) -> str:
    """The counters in the Prometheus text exposition format (node_exporter's textfile collector).

    Known counters get their HELP and TYPE; a numeric counter added later
    without an entry here still appears, typed untyped, rather than missing.
    """
    lines: List[str] = []
    known = set()
    for key, name, kind, help_text, label in PROMETHEUS_METRICS:
        known.add(key)
        if key not in snapshot:
            continue
        _metric_header(lines, name, kind, help_text)
        value = snapshot[key]
        if label is None:
            lines.append('%s%s %s' % (PROMETHEUS_PREFIX, name, _number(value)))
        elif label == 'facility':
            for facility, count in sorted(value.items()):
                lines.append('%s%s{app="%s",facility="%s"} %d' % (
                    PROMETHEUS_PREFIX, name, prometheus_label_value(facility.split(':', 1)[0]),
                    prometheus_label_value(facility), count))
        else:
            for label_value, count in sorted(value.items()):
                lines.append('%s%s{%s="%s"} %d' % (PROMETHEUS_PREFIX, name, label,
                                                    prometheus_label_value(label_value), count))
    for key, value in sorted(snapshot.items()):
        if key not in known and key not in _NOT_METRICS and isinstance(value, int) and not isinstance(value, bool):
            name = _PROMETHEUS_NAME.sub('_', key)
            _metric_header(lines, name, 'untyped', key.replace('_', ' ') + '.')
            lines.append('%s%s %d' % (PROMETHEUS_PREFIX, name, value))
    return '\n'.join(lines) + '\n'


_NOT_METRICS = {'pid', 'time', 'uptime_seconds', 'accepted', 'rejected', 'accepted_by_app', 'version'}


def _metric_header(lines: List[str], name: str, kind: str, help_text: str) -> None:
    escaped_help = help_text.replace('\\', '\\\\').replace('\n', '\\n')
    lines.append('# HELP %s%s %s' % (PROMETHEUS_PREFIX, name, escaped_help))
    lines.append('# TYPE %s%s %s' % (PROMETHEUS_PREFIX, name, kind))


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def peer_text(value: Any) -> str:
    """A peer-supplied value made safe to put in the daemon's own log."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 200:
        text = text[:200] + '...'
    return ascii(text)[1:-1]


class RateLimitedReporter:
    """Logs at most `burst` reports per key in each `interval` seconds.

    A flood of bad frames must not turn into a flood of log lines; what was
    held back is summed up when the key's interval ends.
    """

    def __init__(self, interval: float = 10.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._windows: Dict[str, list] = {}

    def report(self, key: str, level: int, message: str, *args: Any) -> None:
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            if window is not None and window[2]:
                log.log(level, '%d more reports of %s were suppressed in the last %.0f s',
                        window[2], key, now - window[0])
            if len(self._windows) > 10000:
                self._windows.clear()
            window = self._windows[key] = [now, 0, 0]
        if window[1] < self.burst:
            window[1] += 1
            log.log(level, message, *args)
        else:
            window[2] += 1


# (snapshot key, label) of the single numbers in --status, in this order
STATUS_NUMBERS = (
    ('bytes_received', 'bytes received'),
    ('frames_received', 'frames received'),
    ('connections_accepted', 'connections accepted'),
    ('connections_open', 'connections open'),
    ('connections_refused', 'connections refused'),
    ('tls_failures', 'TLS handshake failures'),
    ('connections_refused_per_address', 'refused (per address limit)'),
    ('connections_closed_idle', 'closed idle (no frame)'),
    ('frames_timed_out', 'closed (frame timeout)'),
    ('connections_closed_buffer_full', 'closed (buffer limit)'),
    ('buffered_bytes', 'bytes buffered now'),
    ('inflated_bytes', 'bytes inflated'),
    ('inflate_limited', 'inflate rate limit reached'),
    ('rotations', 'rotations'),
    ('compressions', 'compressions'),
    ('compression_failures', 'compression failures'),
    ('write_errors', 'write errors'),
    ('unsafe_paths_refused', 'links and special files refused'),
    ('messages_dropped_unwritable', 'lines dropped (unwritable)'),
    ('duplicates_dropped', 'duplicates dropped (resent)'),
    ('acks_sent', 'acknowledgements sent'),
)
STATUS_WIDTH = 40
# (snapshot key, label) of the by-key counts in --status, after the rejections
STATUS_BREAKDOWNS = (
    ('syslog_messages_by_listener', 'syslog messages received'),
    ('syslog_truncated_by_listener', 'syslog messages truncated'),
)


def format_status(snapshot: Dict[str, Any]) -> str:
    """The counters for a person: one `label  number` per line, breakdowns indented."""
    started = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(snapshot.get('started', 0)))
    lines = ['loghogd %s, PID %s, up %s (since %s)' % (
        snapshot.get('version', '?'), snapshot.get('pid', '?'),
        _duration(snapshot.get('uptime_seconds', 0)), started), '']
    _status_number(lines, 'messages accepted', snapshot.get('accepted', 0))
    _status_breakdown(lines, 'by application', snapshot.get('accepted_by_app', {}))
    _status_breakdown(lines, 'by facility', snapshot.get('accepted_by_facility', {}))
    _status_number(lines, 'messages rejected', snapshot.get('rejected', 0))
    _status_breakdown(lines, 'by reason', snapshot.get('rejected_by_reason', {}))
    _status_breakdown(lines, 'by application', snapshot.get('rejected_by_app', {}))
    for key, label in STATUS_BREAKDOWNS:
        if snapshot.get(key):
            _status_number(lines, label, sum(snapshot[key].values()))
            _status_breakdown(lines, 'by listener', snapshot[key])
    shown = {key for key, _label in STATUS_NUMBERS}
    for key, label in STATUS_NUMBERS:
        if key in snapshot:
            _status_number(lines, label, snapshot[key])
    for key, value in sorted(snapshot.items()):
        if key not in shown and key not in _NOT_METRICS and key != 'started' and _is_count(value):
            _status_number(lines, key.replace('_', ' '), value)
    high_water = snapshot.get('ack_high_water')
    if high_water:
        _status_number(lines, 'acknowledged-delivery clients', len(high_water))
        _status_breakdown(lines, 'highest seq handled, by client id', high_water)
    return '\n'.join(lines) + '\n'


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _status_number(lines: List[str], label: str, value: int, indent: int = 0) -> None:
    text = ' ' * indent + label
    lines.append('%s %*d' % (text, max(1, STATUS_WIDTH - len(text)), value))


def _status_breakdown(lines: List[str], title: str, counts: Dict[str, int]) -> None:
    if not counts:
        return
    lines.append('  ' + title)
    for name, count in sorted(counts.items()):
        _status_number(lines, peer_text(name), count, indent=4)


def _duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days:
        return '%dd %02dh %02dm %02ds' % (days, hour, minute, second)
    if hours:
        return '%dh %02dm %02ds' % (hour, minute, second)
    return '%dm %02ds' % (minute, second)
