"""Counters of what the daemon did, and rate-limited reports of what went wrong.

Counters are plain integers bumped on the hot path; turning them into a
snapshot (for --status, SIGUSR1 and Prometheus) happens only when asked.
"""

import collections
import json
import logging
import os
import time
from typing import Any, Callable, Dict, Optional

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
        self.rotations = 0
        self.compressions = 0
        self.compression_failures = 0
        self.write_errors = 0
        self.messages_dropped_unwritable = 0
        self.duplicates_dropped = 0
        self.acks_sent = 0

    def reject(self, reason: str, app_id: Optional[str] = None) -> None:
        self.rejected_by_reason[reason] += 1
        if app_id is not None:
            self.rejected_by_app[app_id] += 1

    def snapshot(self) -> Dict[str, Any]:
        accepted = dict(self.accepted_by_facility)
        by_app: Dict[str, int] = collections.Counter()
        for name, count in accepted.items():
            by_app[name.split(':', 1)[0]] += count
        return {
            'pid': os.getpid(),
            'started': self.started,
            'uptime_seconds': round(time.time() - self.started, 3),
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
            'rotations': self.rotations,
            'compressions': self.compressions,
            'compression_failures': self.compression_failures,
            'write_errors': self.write_errors,
            'messages_dropped_unwritable': self.messages_dropped_unwritable,
            'duplicates_dropped': self.duplicates_dropped,
            'acks_sent': self.acks_sent,
        }


def write_json_atomically(path: str, data: Any) -> None:
    """Readers never see half a file: write a temporary one, then rename it."""
    temporary = '%s.%d.tmp' % (path, os.getpid())
    with open(temporary, 'w', encoding='utf-8') as stream:
        json.dump(data, stream, indent=1, sort_keys=True)
        stream.write('\n')
    os.replace(temporary, path)


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
