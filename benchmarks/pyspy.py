"""Turn a py-spy `--format raw` recording of loghogd into its top entries.

The raw format is one collapsed stack per line, `frame;frame;... samples`,
with each frame as `function (file:line)`. The hot path shows twice: by
self samples (where the time is spent) and by inclusive samples (which
caller the time is spent under).
"""

import os
import re
import signal
import subprocess
from collections import Counter
from typing import Any, Dict, List

STOP_TIMEOUT = 30.0
TOP = 15
FRAME = re.compile(r'^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$')


def frame_name(frame: str) -> str:
    """`function (file)` without the line number, with the path cut to its last two parts."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group('file')
    short = '/'.join(path.split('/')[-2:])
    return '%s (%s)' % (match.group('function'), short)


def summarize(lines: List[str], top: int = TOP) -> Dict[str, Any]:
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip('\n').rpartition(' ')
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [frame_name(frame) for frame in stack.split(';')]
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    return {'samples': total,
            'self': own.most_common(top),
            'inclusive': inclusive.most_common(top)}


def stop_and_summarize(profiler: subprocess.Popen, output: str) -> Dict[str, Any]:
    """SIGINT makes py-spy write its file; read the file into the top entries."""
    if profiler.poll() is None:
        profiler.send_signal(signal.SIGINT)
    try:
        _, stderr = profiler.communicate(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        profiler.kill()
        _, stderr = profiler.communicate()
    if not os.path.exists(output):
        return {'error': 'py-spy wrote nothing (exit %s): %s'
                         % (profiler.returncode, (stderr or b'').decode('utf-8', 'replace').strip()[-500:])}
    with open(output, encoding='utf-8', errors='replace') as recording:
        return summarize(recording.readlines())


def render(profile: Dict[str, Any]) -> str:
    if 'error' in profile:
        return 'profile: %s' % profile['error']
    total = max(profile['samples'], 1)
    lines = ['loghogd profile (py-spy, %d samples, %s at %s records/s while sampled), top by self time:'
             % (profile['samples'], profile.get('load', '?'), '{:,.0f}'.format(profile.get('records_per_s', 0)))]
    lines += ['  %5.1f%%  %s' % (100.0 * samples / total, name) for name, samples in profile['self']]
    lines.append('top by inclusive time:')
    lines += ['  %5.1f%%  %s' % (100.0 * samples / total, name) for name, samples in profile['inclusive']]
    return '\n'.join(lines)
