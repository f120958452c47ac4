"""When a log file rotates next: named schedules, cron (croniter), size.

Schedules are evaluated on the wall clock of a time zone (the local one
unless the caller's datetime carries another), because operators write
"daily" and "55 22 * * *" meaning their clock. Two rules make that precise
across daylight saving changes:

- a wall time that happens twice (clocks go back) is due once, at its first
  occurrence, unless the last rotation already lies between the two, in
  which case the second occurrence is the next one;
- a wall time that does not exist (clocks go forward) is moved forward by
  the size of the jump: 02:30 on a night that skips 02:00-03:00 is 03:30.

Compare returned datetimes with `.timestamp()` or `seconds_until()`: two
aware datetimes with the same tzinfo compare and subtract on their wall
clocks, which is wrong by an hour around a change.

The rotation state (the time each file last rotated) is a small JSON file in
the work directory, replaced atomically, so that a daemon that was down at
midnight still rotates a daily file when it starts.
"""

import difflib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Callable, Container, Dict, Iterator, List, Optional, Tuple

from croniter import croniter
from dateutil import tz

from loghogd import safefs
from loghogd.atomicfile import replace_file
from loghogd.wakeup import NEVER

NAMED = {
    'hourly': 'hourly',
    'daily': 'daily',
    'midnight': 'daily',
    'weekly': 'weekly',
    'monthly': 'monthly',
    'yearly': 'yearly',
    'annually': 'yearly',
}
SIZE = 'size'

_CRON_FIELDS = (
    ('minute', 0, 59, {}),
    ('hour', 0, 23, {}),
    ('day of month', 1, 31, {}),
    ('month', 1, 12, {name: number for number, name in enumerate(
        'jan feb mar apr may jun jul aug sep oct nov dec'.split(), start=1)}),
    ('day of week', 0, 7, {name: number for number, name in enumerate(
        'sun mon tue wed thu fri sat'.split())}),
)
_CRON_ITEM = re.compile(r'^(?P<start>\*|[0-9]+|[a-z]{3})(?:-(?P<end>[0-9]+|[a-z]{3}))?(?:/(?P<step>[0-9]+))?$')
_CRON_CHARACTERS = re.compile(r'[0-9*/,-]*')

_SIZE = re.compile(r'^([0-9]+)\s*([kmg]?)$', re.IGNORECASE)
_SIZE_UNITS = {'': 1, 'k': 1024, 'm': 1024 ** 2, 'g': 1024 ** 3}
_AGE = re.compile(r'^([0-9]+)\s*([smhdw])$', re.IGNORECASE)
_AGE_UNITS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400}

STATE_VERSION = 1
STATE_TEMP_PREFIX = '.rotation-state.'


@dataclass(frozen=True)
class RotationSchedule:
    """A validated `rotate` value; build it with parse_rotate().

    `spec` is the normalized text ('daily' for 'midnight', cron fields joined
    by one space), so two configs that mean the same compare equal on reload.
    """
    spec: str

    @property
    def size_only(self) -> bool:
        """True when only max_size triggers rotation (`rotate = size`)."""
        return self.spec == SIZE

    def next_due(self, last_rotation: datetime, zone: Optional[tzinfo] = None) -> Optional[datetime]:
        """The first due time strictly after `last_rotation`, None for size only.

        The wall clock is `zone`, else last_rotation's zone, else the local
        one (a naive last_rotation is taken as local time).
        """
        if self.size_only:
            return None
        zone = zone or last_rotation.tzinfo or tz.tzlocal()
        if last_rotation.tzinfo is None:
            last_rotation = last_rotation.replace(tzinfo=zone)
        last_rotation = last_rotation.astimezone(zone)
        return _first_instant_after(last_rotation, zone, self._wall_times_after(last_rotation.replace(tzinfo=None)))

    def _wall_times_after(self, wall: datetime) -> Iterator[datetime]:
        if self.spec in _NAMED_STEPS:
            first, following = _NAMED_STEPS[self.spec]
            due = first(wall)
            while True:
                yield due
                due = following(due)
        cron = croniter(self.spec, wall)
        while True:
            yield cron.get_next(datetime)


def parse_rotate(value: str) -> RotationSchedule:
    """A `rotate` (or `[log] when`) value as a schedule; ValueError says why not."""
    text = value.strip()
    lowered = text.lower()
    if not text:
        raise ValueError('empty rotation schedule')
    if lowered in NAMED:
        return RotationSchedule(NAMED[lowered])
    if lowered == SIZE:
        return RotationSchedule(SIZE)
    if text.startswith('@'):
        raise ValueError('%r: @-forms are not supported; use hourly, daily, weekly, monthly, '
                         'yearly, size or five cron fields' % text)
    fields = text.split()
    if len(fields) == 1 and not _CRON_CHARACTERS.fullmatch(lowered):
        raise ValueError(_unknown_name(text))
    if len(fields) != 5:
        raise ValueError('%r: a cron expression has exactly 5 fields (minute hour day-of-month '
                         'month day-of-week), this has %d' % (text, len(fields)))
    for field_text, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        _check_cron_field(field_text, name, low, high, names)
    spec = ' '.join(fields).lower()
    try:
        croniter(spec, datetime(2000, 1, 1)).get_next(datetime)
    except Exception as error:  # croniter's error types differ between versions
        raise ValueError('%r: not a valid cron expression (%s)' % (text, error)) from None
    return RotationSchedule(spec)


def _unknown_name(text: str) -> str:
    """A word that is no schedule: the nearest name, if one is near ('dayly' -> daily)."""
    names = sorted(set(NAMED) | {SIZE})
    near = difflib.get_close_matches(text.lower(), names, n=1)
    hint = 'did you mean %s' % near[0] if near else 'use %s, or five cron fields' % ', '.join(names)
    return '%r: unknown schedule name, %s' % (text, hint)


def _check_cron_field(text: str, name: str, low: int, high: int, names: Dict[str, int]) -> None:
    """Plain cron syntax only, in range, ranges not reversed, steps >= 1."""
    for item in text.split(','):
        match = _CRON_ITEM.match(item.lower())
        if not match:
            raise ValueError('cron %s field %r: %r is not a number, *, a range, a list or a step'
                             % (name, text, item))
        start, end, step = match.group('start', 'end', 'step')
        if start == '*' and end is not None:
            raise ValueError('cron %s field %r: * cannot start a range' % (name, text))
        bounds = [_cron_number(part, name, text, low, high, names) for part in (start, end)
                  if part is not None and part != '*']
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise ValueError('cron %s field %r: range %s is reversed' % (name, text, item))
        if step is not None and int(step) < 1:
            raise ValueError('cron %s field %r: step must be at least 1' % (name, text))


def _cron_number(part: str, name: str, text: str, low: int, high: int, names: Dict[str, int]) -> int:
    if part.isdigit():
        number = int(part)
    elif part in names:
        number = names[part]
    else:
        raise ValueError('cron %s field %r: %r is not a %s name' % (name, text, part, name))
    if not low <= number <= high:
        raise ValueError('cron %s field %r: %d is out of range %d-%d' % (name, text, number, low, high))
    return number


def _next_hour(wall: datetime) -> datetime:
    return wall.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def _next_midnight(wall: datetime) -> datetime:
    return datetime.combine(wall.date() + timedelta(days=1), datetime.min.time())


def _next_monday(wall: datetime) -> datetime:
    return datetime.combine(wall.date() + timedelta(days=7 - wall.weekday()), datetime.min.time())


def _next_month(wall: datetime) -> datetime:
    year, month = (wall.year + 1, 1) if wall.month == 12 else (wall.year, wall.month + 1)
    return datetime(year, month, 1)


def _next_year(wall: datetime) -> datetime:
    return datetime(wall.year + 1, 1, 1)


_NAMED_STEPS: Dict[str, Tuple[Callable[[datetime], datetime], Callable[[datetime], datetime]]] = {
    'hourly': (_next_hour, lambda due: due + timedelta(hours=1)),
    'daily': (_next_midnight, lambda due: due + timedelta(days=1)),
    'weekly': (_next_monday, lambda due: due + timedelta(days=7)),
    'monthly': (_next_month, _next_month),
    'yearly': (_next_year, _next_year),
}


def _instants(wall: datetime, zone: tzinfo) -> Tuple[Tuple[datetime, bool], ...]:
    """The real instants a wall time names: (instant, was_shifted), first first."""
    first = wall.replace(tzinfo=zone, fold=0)
    if not tz.datetime_exists(first):
        return ((tz.resolve_imaginary(first), True),)
    return ((first, False), (wall.replace(tzinfo=zone, fold=1), False))


def _first_instant_after(last: datetime, zone: tzinfo, walls: Iterator[datetime]) -> datetime:
    """The earliest instant named by `walls` (ascending) strictly after `last`.

    Only a wall time moved forward by a gap can overtake a later wall time,
    so after such a hit the walls up to its instant are checked too.
    """
    after = last.timestamp()
    found: Optional[datetime] = None
    for wall in walls:
        if found is not None and wall > found.replace(tzinfo=None):
            return found
        for instant, shifted in _instants(wall, zone):
            if instant.timestamp() > after:
                if found is None or instant.timestamp() < found.timestamp():
                    found = instant
                if not shifted:
                    return found
                break
    raise AssertionError('schedule iterators never end')


def seconds_until(when: datetime, now: datetime) -> float:
    """Seconds from `now` to `when` (aware), right across DST changes."""
    return when.timestamp() - now.timestamp()


def parse_size(value: str) -> int:
    """Bytes from '1048576', '512K', '10M' or '2G' (binary units, case-insensitive)."""
    return _count_units(value, _SIZE, _SIZE_UNITS, 'a size: use bytes, or a number with K, M or G (x1024)')


def parse_age(value: str) -> float:
    """Seconds from '90s', '90m', '12h', '30d' or '2w'; a unit is required."""
    return float(_count_units(value, _AGE, _AGE_UNITS, 'an age: use a number and a unit s, m, h, d or w (e.g. 30d)'))


def _count_units(value: str, pattern: 're.Pattern[str]', units: Dict[str, int], what: str) -> int:
    """A positive number times its unit's multiplier; ValueError names `what` was expected."""
    match = pattern.match(value.strip())
    if not match:
        raise ValueError('%r is not %s' % (value, what))
    amount = int(match.group(1)) * units[match.group(2).lower()]
    if amount < 1:
        raise ValueError('%r must be more than 0' % value)
    return amount


class RotationState:
    """The last rotation time of each log file, kept in a JSON file.

    A missing file is an empty state. A file that cannot be read as a state
    also starts empty, with `warning` saying why, so that a damaged work
    file never keeps the daemon from running; the next save() replaces it.
    """

    def __init__(self, path: str, rotations: Optional[Dict[str, datetime]] = None,
                 warning: Optional[str] = None) -> None:
        self.path = path
        self.warning = warning
        self._rotations: Dict[str, datetime] = dict(rotations or {})

    @classmethod
    def load(cls, path: str) -> 'RotationState':
        """The state saved at `path`; empty (with a warning) when it is unusable."""
        try:
            # read as root at start-up, in the daemon user's work directory: no link, no FIFO
            with open(safefs.open_file(os.path.dirname(path), path, os.O_RDONLY), encoding='utf-8') as state_file:
                document = json.load(state_file)
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as error:
            return cls(path, warning='%s: rotation state unreadable, starting empty: %s' % (path, error))
        try:
            return cls(path, _rotations_from(document))
        except (TypeError, ValueError, KeyError) as error:
            return cls(path, warning='%s: rotation state malformed, starting empty: %s' % (path, error))

    def remove_temporary_files(self) -> int:
        """Delete the temporary files a kill during save() left beside the state; return how many."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            names = [name for name in os.listdir(directory) if name.startswith(STATE_TEMP_PREFIX)]
        except OSError:
            return 0
        for name in names:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
        return len(names)

    def last_rotation(self, log_path: str) -> Optional[datetime]:
        """When `log_path` last rotated (aware, local zone), None if never."""
        return self._rotations.get(log_path)

    def paths(self) -> List[str]:
        """Every log file with a remembered rotation."""
        return list(self._rotations)

    def forget(self, log_path: str) -> None:
        """Drop a file's rotation time, so that the state does not grow with every host ever seen."""
        self._rotations.pop(log_path, None)

    def forget_vanished(self, tracked: Container[str]) -> int:
        """Forget the files that are gone and not `tracked` (a host's file the operator deleted); return how many.

        A file that comes back starts a new period when its first line is written.
        """
        vanished = [path for path in self._rotations if path not in tracked and not os.path.lexists(path)]
        for path in vanished:
            self.forget(path)
        return len(vanished)

    def record(self, log_path: str, when: datetime) -> None:
        """Remember a rotation; a naive `when` is taken as local time."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=tz.tzlocal())
        if not isinstance(when.tzinfo, tz.tzlocal):  # converting costs ~0.1 ms: 1 s for a midnight of 10 000 files
            when = when.astimezone(tz.tzlocal())
        self._rotations[log_path] = when

    def save(self) -> None:
        """Write the state atomically and durably: a crash leaves the old state or the new."""
        document = {
            'version': STATE_VERSION,
            'last_rotation': {log_path: when.isoformat() for log_path, when in sorted(self._rotations.items())},
        }
        replace_file(self.path, json.dumps(document, indent=1).encode('utf-8'), durable=True,
                     prefix=STATE_TEMP_PREFIX)


def _rotations_from(document: object) -> Dict[str, datetime]:
    if not isinstance(document, dict) or document.get('version') != STATE_VERSION:
        raise ValueError('not a version %d rotation state' % STATE_VERSION)
    rotations = {}
    for log_path, text in document['last_rotation'].items():
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            raise ValueError('%r: time %r has no UTC offset' % (log_path, text))
        rotations[str(log_path)] = when.astimezone(tz.tzlocal())
    return rotations


def local_time(timestamp: float) -> datetime:
    """A timestamp as an aware local datetime, the form rotation times are kept in."""
    return datetime.fromtimestamp(timestamp, tz.tzlocal())


_DUE_CACHE: Dict[Tuple[str, float], float] = {}
_DUE_CACHE_SIZE = 1024


def due_after(schedule: RotationSchedule, last: datetime) -> float:
    """When a file last rotated at `last` (local time) is due, remembered per minute of `last`.

    Every due time is a whole minute, and next_due only compares instants
    with `last`, so any `last` within one minute gets the same answer; and
    thousands of host files share a minute (a midnight, a start-up).
    """
    key = (schedule.spec, last.timestamp() // 60)
    due = _DUE_CACHE.get(key)
    if due is None:
        if len(_DUE_CACHE) >= _DUE_CACHE_SIZE:
            _DUE_CACHE.clear()
        next_due = schedule.next_due(last)
        due = _DUE_CACHE[key] = NEVER if next_due is None else next_due.timestamp()
    return due
