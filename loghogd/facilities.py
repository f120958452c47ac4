"""facilities.conf: one Facility per application or submodule, and lookup.

A message's dotted `module` walks up under an implied `root` until it meets
a configured facility, so the most specific section wins.
"""

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple, TypeVar

from loghogd.config import IniFile, parse_bool, parse_int, read_ini
from loghogd.formats import CLASSIC, OPTIONS, LineFormat, parse_option
from loghogd.schedule import RotationSchedule, parse_age, parse_rotate, parse_size

ROOT = 'root'

T = TypeVar('T')


@dataclass(frozen=True)
class Facility:
    """Where and how one application module's records are kept."""
    app_id: str
    module: str
    rotate: RotationSchedule
    backup_count: int
    max_size: Optional[int] = None
    max_age: Optional[float] = None
    flush_every: int = 1
    file_per_host: bool = False
    secret: Optional[str] = None
    sync: bool = False
    max_hosts: int = 10000
    line_format: LineFormat = CLASSIC

    @property
    def name(self) -> str:
        return '%s:%s' % (self.app_id, self.module)


class Facilities:
    """The configured facilities, looked up by (app_id, module)."""

    def __init__(self, facilities: Dict[Tuple[str, str], Facility]) -> None:
        self._facilities = dict(facilities)

    def __iter__(self) -> Iterator[Facility]:
        return iter(self._facilities.values())

    def __len__(self) -> int:
        return len(self._facilities)

    def lookup(self, app_id: str, module: str) -> Optional[Facility]:
        """The most specific facility for `module`, or None for an unknown app."""
        facilities = self._facilities
        if module == ROOT or module.startswith('root.'):
            module = module[5:] or ROOT
        while True:
            facility = facilities.get((app_id, module))
            if facility is not None or module == ROOT:
                return facility
            dot = module.rfind('.')
            module = module[:dot] if dot > 0 else ROOT


def line_formats(facilities: Facilities) -> Dict[str, LineFormat]:
    """Each facility's line format by name, to tell what a reload changes."""
    return {facility.name: facility.line_format for facility in facilities}


NAME_PART = re.compile(r'[A-Za-z0-9_-][A-Za-z0-9._-]*')
MAX_PART_LENGTH = 128
MAX_MODULE_LENGTH = 150
"""So that '<64-char host>@<module>.log.<27-char stamp>.xz.tmp' fits a 255-byte file name."""
KEYS = ['rotate', 'backup_count', 'max_size', 'max_age', 'flush_every', 'file_per_host', 'secret', 'sync',
        'max_hosts', *OPTIONS]
INHERITED = ('max_size', 'max_age', 'flush_every', 'file_per_host', 'secret', 'sync', 'max_hosts')


def load_facilities(path: str, line_format: LineFormat = CLASSIC) -> Facilities:
    """Read facilities.conf at `path`; ConfigError names file, line, section, key.

    An empty file configures no application, which is valid. `line_format`
    is loghogd.conf's [format]: what an app's root facility leaves unset.
    """
    ini = read_ini(path)
    names = {section: _section_name(ini, section) for section in ini.parser.sections()}
    seen: Dict[Tuple[str, str], str] = {}
    for section, name in names.items():
        ini.check_keys(section, KEYS)
        if name in seen:
            raise ini.error(section, '', 'the same facility as [%s]' % seen[name])
        seen[name] = section
    roots = {name[0]: _facility(ini, section, name, None, line_format)
             for section, name in names.items() if name[1] == ROOT}
    facilities = {}
    for section, name in names.items():
        if name[1] == ROOT:
            facilities[name] = roots[name[0]]
        elif name[0] not in roots:
            raise ini.error(section, '', 'submodule of %r, which has no root facility: add a [%s] section'
                            % (name[0], name[0]))
        else:
            facilities[name] = _facility(ini, section, name, roots[name[0]], line_format)
    return Facilities(facilities)


def _section_name(ini: IniFile, section: str) -> Tuple[str, str]:
    """`app`, `app:`, `app:root` -> (app, 'root'); `app:[root.]a.b` -> (app, 'a.b')."""
    app_id, _, module = section.partition(':')
    if module == ROOT or module.startswith(ROOT + '.'):
        module = module[len(ROOT) + 1:]
    module = module or ROOT
    try:
        check_name_part(app_id, 'application id')
        if app_id.endswith('.log'):
            raise ValueError('application id %r: names ending in .log are kept for the daemon\'s own log' % app_id)
        for part in module.split('.'):
            check_name_part(part, 'module part')
        if len(module) > MAX_MODULE_LENGTH:
            raise ValueError('module %r is longer than %d characters' % (module, MAX_MODULE_LENGTH))
    except ValueError as error:
        raise ini.error(section, '', str(error)) from None
    return app_id, module


def check_name_part(part: str, what: str) -> None:
    """Application ids and module parts become file names, so only safe ones."""
    if not part:
        raise ValueError('%s is empty' % what)
    if not NAME_PART.fullmatch(part) or part in ('.', '..'):
        raise ValueError('%s %r must be letters, digits, ".", "_" or "-", and not start with "."' % (what, part))
    if len(part) > MAX_PART_LENGTH:
        raise ValueError('%s %r is longer than %d characters' % (what, part, MAX_PART_LENGTH))


def _facility(ini: IniFile, section: str, name: Tuple[str, str], root: Optional[Facility],
              line_format: LineFormat) -> Facility:
    values = ini.parser[section]

    def get(key: str, converter: Callable[[str], T]) -> T:
        return ini.convert(section, key, values[key].strip(), converter)

    for key in ('rotate', 'backup_count'):
        if key not in values:
            raise ini.error(section, key, 'required for every facility')
    settings = {key: getattr(root, key) for key in INHERITED} if root else {}
    converters: Dict[str, Callable[[str], object]] = {
        'max_size': lambda raw: parse_size(raw) if raw else None,
        'max_age': lambda raw: parse_age(raw) if raw else None,
        'flush_every': lambda raw: parse_int(raw, 1),
        'file_per_host': parse_bool,
        'secret': lambda raw: raw or None,
        'sync': parse_bool,
        'max_hosts': lambda raw: parse_int(raw, 1),
    }
    settings.update({key: get(key, converter) for key, converter in converters.items() if key in values})
    rotate = get('rotate', parse_rotate)
    if rotate.size_only and settings.get('max_size') is None:
        raise ini.error(section, 'rotate', "'size' needs max_size (bytes) in this section or the app's root")
    given = {key: get(key, lambda raw, key=key: parse_option(key, raw)) for key in OPTIONS if key in values}
    settings['line_format'] = dataclasses.replace(root.line_format if root else line_format, **given)
    return Facility(app_id=name[0], module=name[1], rotate=rotate,
                    backup_count=get('backup_count', lambda raw: parse_int(raw, 0)), **settings)
