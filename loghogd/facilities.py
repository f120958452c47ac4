"""facilities.conf: one Facility per application or submodule, and lookup.

A message's dotted `module` walks up under an implied `root` until it meets
a configured facility, so the most specific section wins.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

from loghogd.schedule import RotationSchedule

ROOT = 'root'


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
