"""Counters of what the daemon did, and their Prometheus text form.

Counters are plain integers bumped on the hot path; turning them into a
snapshot (for --status, SIGUSR1 and Prometheus) happens only when asked.
The --status file and text are in loghogd.status, rate-limited reports in
loghogd.reporting.
"""

import collections
import os
import re
import time
from typing import Any, Dict, List, Optional

from loghogd import __version__
from loghogd.batchdecode import DECODER_NAME
from loghogd.inflating import INFLATER_NAME

MAX_REJECTED_APPS = 1000
OTHER_REJECTED_APPS = '(other apps)'


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
        self.ack_clients_evicted = 0
        self.signature_unused = 0
        self.batches_received = 0
        self.rate_limited_resends = 0
        self.hooks_started = 0
        self.hooks_succeeded = 0
        self.hook_failures = 0
        self.hook_timeouts = 0
        self.hooks_dropped = 0
        self.backups_deleted_total_size = 0

    def reject(self, reason: str, app_id: Optional[str] = None, count: int = 1) -> None:
        """Count rejections; app ids come from the network, so past MAX_REJECTED_APPS they share a row."""
        self.rejected_by_reason[reason] += count
        if app_id is not None:
            if app_id not in self.rejected_by_app and len(self.rejected_by_app) >= MAX_REJECTED_APPS:
                app_id = OTHER_REJECTED_APPS
            self.rejected_by_app[app_id] += count

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
            'ack_clients_evicted': self.ack_clients_evicted,
            'signature_unused': self.signature_unused,
            'batches_received': self.batches_received,
            'batch_decoder': DECODER_NAME,
            'inflater': INFLATER_NAME,
            'rate_limited_resends': self.rate_limited_resends,
            'hooks_started': self.hooks_started,
            'hooks_succeeded': self.hooks_succeeded,
            'hook_failures': self.hook_failures,
            'hook_timeouts': self.hook_timeouts,
            'hooks_dropped': self.hooks_dropped,
            'backups_deleted_total_size': self.backups_deleted_total_size,
        }


# (snapshot key, metric name, type, help, label name of a by-key mapping)
PROMETHEUS_METRICS = (
    ('accepted_by_facility', 'messages_accepted_total', 'counter',
     'Messages written to a log file, by application and facility.', 'facility'),
    ('rejected_by_reason', 'messages_rejected_total', 'counter',
     'Messages or frames rejected, by reason.', 'reason'),
    ('rejected_by_app', 'messages_rejected_by_app_total', 'counter',
     'Messages rejected, by application id (unknown ones too, at most %d).' % MAX_REJECTED_APPS, 'app'),
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
    ('ack_clients_evicted', 'ack_clients_evicted_total', 'counter',
     'Acknowledged-delivery client ids forgotten to make room for new ones.', None),
    ('ack_clients', 'ack_clients', 'gauge', 'Acknowledged-delivery client ids remembered.', None),
    ('signature_unused', 'signature_unused_total', 'counter',
     'Signed messages written unchecked: their facility has no secret.', None),
    ('forward_published', 'forward_published_total', 'counter',
     'Records handed to JetStream for publishing (again after a restart for those not acknowledged).', None),
    ('forward_acked', 'forward_acked_total', 'counter', 'Records JetStream acknowledged (stored or a duplicate).',
     None),
    ('forward_duplicates', 'forward_duplicates_total', 'counter',
     'Records JetStream already had (same message id): resent by a client or replayed from the queue.', None),
    ('forward_in_flight', 'forward_in_flight', 'gauge', 'Records published and not yet acknowledged.', None),
    ('forward_pending_bytes', 'forward_pending_bytes', 'gauge',
     'Bytes of records in the forward queue on disk not yet acknowledged by JetStream.', None),
    ('forward_unreadable', 'forward_unreadable_total', 'counter', 'Unreadable forward queue entries skipped.',
     None),
    ('consume_received', 'consume_received_total', 'counter', 'Messages fetched from the JetStream consumer.',
     None),
    ('consume_acked', 'consume_acked_total', 'counter',
     'Messages acknowledged to JetStream once their line was on disk (or they were rejected).', None),
    ('consume_redelivered', 'consume_redelivered_total', 'counter',
     'Messages JetStream delivered more than once (after a crash or a lost acknowledgement).', None),
    ('consume_duplicates', 'consume_duplicates_total', 'counter',
     'Redelivered messages dropped because the journal had them on disk already.', None),
    ('consume_pending', 'consume_pending', 'gauge', 'Messages fetched and not yet acknowledged.', None),
    ('batches_received', 'received_batches_total', 'counter', 'Protocol 1.2 batch frames read from clients.', None),
    ('rate_limited_resends', 'rate_limited_resends_total', 'counter',
     'Connections closed unacknowledged because their acknowledged records went over a rate limit.', None),
    ('hooks_started', 'hooks_started_total', 'counter', 'post_rotate commands started.', None),
    ('hooks_succeeded', 'hooks_succeeded_total', 'counter', 'post_rotate commands that exited 0.', None),
    ('hook_failures', 'hook_failures_total', 'counter',
     'post_rotate commands that failed to start, exited non-zero or timed out.', None),
    ('hook_timeouts', 'hook_timeouts_total', 'counter', 'post_rotate commands killed after post_rotate_timeout.',
     None),
    ('hooks_dropped', 'hooks_dropped_total', 'counter', 'post_rotate commands not run: too many waiting.', None),
    ('backups_deleted_total_size', 'backups_deleted_total_size_total', 'counter',
     'Backups deleted to keep a facility within max_total_size.', None),
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
        if key not in known and key not in NOT_METRICS and isinstance(value, int) and not isinstance(value, bool):
            name = _PROMETHEUS_NAME.sub('_', key)
            _metric_header(lines, name, 'untyped', key.replace('_', ' ') + '.')
            lines.append('%s%s %d' % (PROMETHEUS_PREFIX, name, value))
    return '\n'.join(lines) + '\n'


NOT_METRICS = {'pid', 'time', 'uptime_seconds', 'accepted', 'rejected', 'accepted_by_app', 'version'}


def _metric_header(lines: List[str], name: str, kind: str, help_text: str) -> None:
    escaped_help = help_text.replace('\\', '\\\\').replace('\n', '\\n')
    lines.append('# HELP %s%s %s' % (PROMETHEUS_PREFIX, name, escaped_help))
    lines.append('# TYPE %s%s %s' % (PROMETHEUS_PREFIX, name, kind))


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))
