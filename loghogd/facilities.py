"""facilities.conf: one Facility per application or submodule, and lookup.

A message's dotted `module` walks up under an implied `root` until it meets
a configured facility, so the most specific section wins.
"""

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

from loghogd.formats import CLASSIC, OPTIONS, LineFormat
from loghogd.ini import IniFile, read_ini
from loghogd.schedule import RotationSchedule
from loghogd.schema import FACILITIES_CONF, FACILITY, Values, default, keys_of, option

ROOT = 'root'


def _default(key: str) -> Any:
    return default(FACILITIES_CONF, FACILITY, key)


@dataclass(frozen=True)
class Facility:
    """Where and how one application module's records are kept; the field defaults are the schema's."""
    app_id: str
    module: str
    rotate: RotationSchedule
    backup_count: int
    max_size: Optional[int] = _default('max_size')
    max_age: Optional[float] = _default('max_age')
    flush_every: int = _default('flush_every')
    file_per_host: bool = _default('file_per_host')
    secret: Optional[str] = _default('secret')
    sync: bool = _default('sync')
    max_hosts: int = _default('max_hosts')
    write: bool = _default('write')
    forward: bool = _default('forward')
    file_mode: Optional[int] = _default('file_mode')
    dir_mode: Optional[int] = _default('dir_mode')
    file_group: Optional[int] = _default('file_group')
    post_rotate: Optional[Tuple[str, ...]] = _default('post_rotate')
    post_rotate_timeout: float = _default('post_rotate_timeout')
    rate_limit: Optional[float] = _default('rate_limit')
    max_total_size: Optional[int] = _default('max_total_size')
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
KEYS = keys_of(FACILITIES_CONF, FACILITY)
SETTINGS = [key for key in KEYS if key not in ('rotate', 'backup_count', *OPTIONS)]
"""The keys that are Facility fields of the same name."""


def load_facilities(path: str, line_format: LineFormat = CLASSIC) -> Facilities:
    """Read facilities.conf at `path`; ConfigError names file, line, section, key.

    An empty file configures no application, which is valid. `line_format`
    is loghogd.conf's [format]: what an app's root facility leaves unset.
    """
    ini = read_ini(path)
    names = {}
    for section in ini.parser.sections():
        with ini.noting():
            names[section] = _section_name(ini, section)
    seen: Dict[Tuple[str, str], str] = {}
    for section, name in names.items():
        ini.check_keys(section, KEYS)
        if name in seen:
            ini.errors.append(ini.error(section, '', 'the same facility as [%s]' % seen[name]))
        seen[name] = section
    roots: Dict[str, Optional[Facility]] = {}
    for section, name in names.items():
        if name[1] == ROOT:
            roots[name[0]] = None
            with ini.noting():
                roots[name[0]] = _facility(ini, section, name, None, line_format)
    facilities = {}
    for section, name in names.items():
        if name[1] == ROOT:
            facilities[name] = roots[name[0]]
        elif name[0] not in roots:
            ini.errors.append(ini.error(section, '', 'submodule of %r, which has no root facility: add a [%s] '
                                        'section' % (name[0], name[0])))
        elif roots[name[0]] is not None:
            with ini.noting():
                facilities[name] = _facility(ini, section, name, roots[name[0]], line_format)
    ini.raise_errors()
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
    values = Values(ini, FACILITIES_CONF, FACILITY, section, root)
    missing = [values.error(key, 'required for every facility') for key in KEYS
               if option(FACILITIES_CONF, FACILITY, key).required and not values.given(key)]
    ini.errors.extend(missing)
    if root is not None and values.given('dir_mode'):
        raise values.error('dir_mode', "applies to the app's directory: set it in [%s]" % name[0])
    settings = {key: values[key] for key in SETTINGS}
    if missing:
        raise missing[0]  # noted already: the other keys are checked, the facility is not made
    rotate = values['rotate']
    if rotate.size_only and settings['max_size'] is None:
        raise values.error('rotate', "'size' needs max_size (bytes) in this section or the app's root")
    if not settings['write'] and not settings['forward']:
        raise values.error('write', 'with write = no the facility must forward = yes, or its records go nowhere')
    given = {key: values[key] for key in OPTIONS if values.given(key)}
    settings['line_format'] = dataclasses.replace(root.line_format if root else line_format, **given)
    return Facility(app_id=name[0], module=name[1], rotate=rotate, backup_count=values['backup_count'], **settings)
