"""The --status file the daemon refreshes, and its text for a person."""

import json
import time
from typing import Any, Dict, List

from loghogd.atomicfile import replace_file
from loghogd.reporting import peer_text
from loghogd.stats import NOT_METRICS


def write_json_atomically(path: str, data: Any) -> None:
    """Readers never see half a file: write a temporary one, then rename it."""
    replace_file(path, (json.dumps(data, indent=1, sort_keys=True) + '\n').encode('utf-8'))



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
    ('ack_clients_evicted', 'client ids evicted (table full)'),
    ('ack_clients', 'acknowledged-delivery clients'),
    ('signature_unused', 'signatures unused (no secret)'),
    ('forward_published', 'forwarded: published'),
    ('forward_acked', 'forwarded: acknowledged by JetStream'),
    ('forward_duplicates', 'forwarded: duplicates JetStream dropped'),
    ('forward_in_flight', 'forwarded: in flight'),
    ('forward_pending_bytes', 'forward queue: bytes pending'),
    ('forward_unreadable', 'forward queue: unreadable entries'),
    ('consume_received', 'consumed: received'),
    ('consume_acked', 'consumed: acknowledged'),
    ('consume_redelivered', 'consumed: redelivered'),
    ('consume_duplicates', 'consumed: duplicates dropped'),
    ('consume_pending', 'consumed: pending'),
    ('batches_received', 'batch frames received (protocol 1.2)'),
    ('rate_limited_resends', 'closed to resend (rate limit)'),
    ('hooks_started', 'post_rotate hooks started'),
    ('hooks_succeeded', 'post_rotate hooks succeeded'),
    ('hook_failures', 'post_rotate hooks failed'),
    ('hook_timeouts', 'post_rotate hooks timed out'),
    ('hooks_dropped', 'post_rotate hooks dropped (queue full)'),
    ('backups_deleted_total_size', 'backups deleted (max_total_size)'),
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
        _duration(snapshot.get('uptime_seconds', 0)), started),
        'protocol 1.2 batches decoded with %s, zlib inflated with %s' % (snapshot.get('batch_decoder', '?'),
                                                                       snapshot.get('inflater', '?')), '']
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
        if key not in shown and key not in NOT_METRICS and key != 'started' and _is_count(value):
            _status_number(lines, key.replace('_', ' '), value)
    _status_breakdown(lines, 'by application', snapshot.get('ack_clients_by_app', {}))
    high_water = snapshot.get('ack_high_water', {})
    if len(high_water) < snapshot.get('ack_clients', 0):
        _status_breakdown(lines, 'highest seq handled, the %d most recently seen' % len(high_water), high_water)
    else:
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
