"""Where a record goes, cached by (app_id, module, hostname) for the processor.

Finding a facility walks the module's dots and finding a file may open
one, so a route is looked up once and kept. The cache is bounded (a peer
can send any number of names) and dropped whenever the facilities or the
writer's files change.
"""

from typing import Dict, Optional, Tuple

from loghogd.facilities import Facility
from loghogd.formats import Render
from loghogd.writer import LogFile, Writer

MAX_CACHED_ROUTES = 16384
MAX_CACHED_KEY_LENGTH = 512

Key = Tuple[str, str, str]
Route = Tuple[Facility, Optional[LogFile], str, str, Optional[Render]]
"""(facility, its file or None where it does not write, host text of the classic line, facility name, renderer
or None for the classic line)."""
PlainRoute = Tuple[LogFile, str, str]
"""(file, host text, facility name) of a route whose records need nothing but their classic line queued."""


class RouteCache:
    """The routes of recently seen keys, and apart from them the plain ones that version 1's fast path takes."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._generation = writer.generation
        self.routes: Dict[Key, Route] = {}
        self.plain: Dict[Key, PlainRoute] = {}

    def fresh(self) -> Dict[Key, Route]:
        """The routes, emptied first if the writer's files changed since they were found."""
        if self._generation != self._writer.generation:
            self.clear()
            self._generation = self._writer.generation
        return self.routes

    def keep(self, key: Key, route: Route) -> None:
        """Cache `route` unless its key is too long to be worth keeping; a full cache starts over."""
        if sum(map(len, key)) > MAX_CACHED_KEY_LENGTH:
            return
        if len(self.routes) >= MAX_CACHED_ROUTES:
            self.clear()
        self.routes[key] = route
        facility, logfile, host_text, name, render = route
        if (logfile is not None and render is None and facility.secret is None and not facility.forward
                and facility.rate_limit is None):
            self.plain[key] = (logfile, host_text, name)

    def clear(self) -> None:
        self.routes.clear()
        self.plain.clear()
