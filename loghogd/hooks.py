"""Post-rotate hooks: an operator's command run on each finished backup.

A hook runs once a backup is final (compressed, or left plain when
compression failed), as the daemon's user, in a child process the loop
starts and reaps: the loop never waits for it. The command is run without
a shell (an operator who wants one writes `/bin/sh -c '...' hook`), with
the backup's path as its last argument and the facility in its
environment (HOOK_ENVIRONMENT). At most `max_running` run at once, the
rest wait in order (at most MAX_QUEUED); one that outlives its timeout is
killed with its process group. Every failure is counted and logged with
the exit status and the end of what the command wrote to stderr.
"""

import collections
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Deque, List, Optional, Set, Tuple

from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters

if TYPE_CHECKING:
    from loghogd.facilities import Facility  # facilities imports parse_command from here

log = logging.getLogger('loghogd')

DEFAULT_MAX_RUNNING = 4
DEFAULT_TIMEOUT = 300.0
MAX_QUEUED = 10000
STDERR_TAIL = 500
HOOK_ENVIRONMENT = ('LOGHOGD_BACKUP', 'LOGHOGD_APP', 'LOGHOGD_MODULE', 'LOGHOGD_HOST')
"""Set for every hook: the backup's path, the facility's app and module, the host (empty without file_per_host)."""


def parse_command(raw: str) -> Optional[Tuple[str, ...]]:
    """A command line split as a POSIX shell would split its words (no shell runs it); None if empty."""
    try:
        words = tuple(shlex.split(raw))
    except ValueError as error:
        raise ValueError('%r is not a command line: %s' % (raw, error)) from None
    return words or None


@dataclass(frozen=True)
class HookRequest:
    """One command to run on one backup."""
    command: Tuple[str, ...]
    timeout: float
    backup: str
    app_id: str
    module: str
    host: Optional[str]

    def environment(self) -> dict:
        values = (self.backup, self.app_id, self.module, self.host or '')
        return dict(os.environ, **dict(zip(HOOK_ENVIRONMENT, values)))


class RunningHook:
    """A started hook: its child, its deadline and where its stderr goes."""

    __slots__ = ('request', 'process', 'deadline', 'errors', 'timed_out')

    def __init__(self, request: HookRequest, process: subprocess.Popen, deadline: float, errors: object) -> None:
        self.request = request
        self.process = process
        self.deadline = deadline
        self.errors = errors
        self.timed_out = False


class HookRunner:
    """Runs at most `max_running` hooks at once; the rest wait in order."""

    def __init__(self, counters: Counters, max_running: int = DEFAULT_MAX_RUNNING,
                 on_done: Optional[Callable[[HookRequest], None]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counters = counters
        self.max_running = max_running
        self.on_done = on_done
        self.clock = clock
        self.queue: Deque[HookRequest] = collections.deque()
        self.running: List[RunningHook] = []
        self.reporter = RateLimitedReporter()
        self._busy: Set[str] = set()

    def busy_with(self, backup: str) -> bool:
        """Whether a hook waits for or works on `backup` (retention leaves it until the hook ends)."""
        return backup in self._busy

    def run_on_final(self, facility: 'Facility', host: Optional[str], candidates: Tuple[str, ...]) -> None:
        """The facility's post_rotate, if it has one, for the first of `candidates` that exists."""
        if facility.post_rotate is None:
            return
        for backup in candidates:
            if os.path.exists(backup):
                self.submit(HookRequest(facility.post_rotate, facility.post_rotate_timeout, backup,
                                        facility.app_id, facility.module, host))
                return

    def submit(self, request: HookRequest) -> None:
        """Run `request` when a slot is free; a full queue drops it, counted and logged."""
        if len(self.queue) >= MAX_QUEUED:
            self.counters.hooks_dropped += 1
            self.reporter.report('hooks-dropped', logging.ERROR, 'post_rotate queue is full (%d waiting): '
                                 'not running %s for %s', MAX_QUEUED, request.command[0], request.backup)
            return
        self.queue.append(request)
        self._busy.add(request.backup)
        self._start_queued()

    def _start_queued(self) -> None:
        while self.queue and len(self.running) < self.max_running:
            request = self.queue.popleft()
            errors = tempfile.TemporaryFile()
            try:
                process = subprocess.Popen(
                    [*request.command, request.backup], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=errors, env=request.environment(), cwd='/', close_fds=True, start_new_session=True)
            except OSError as error:
                errors.close()
                self._failed(request, 'cannot start: %s' % (error.strerror or error))
                self._done(request)
                continue
            self.counters.hooks_started += 1
            self.running.append(RunningHook(request, process, self.clock() + request.timeout, errors))

    def reap(self) -> None:
        """Finish the hooks that exited, kill those past their timeout, start waiting ones."""
        now = self.clock()
        still_running, finished = [], []
        for hook in self.running:
            if hook.process.poll() is None:
                if now >= hook.deadline and not hook.timed_out:
                    hook.timed_out = True
                    self.counters.hook_timeouts += 1
                    _kill_group(hook.process)
                still_running.append(hook)
                continue
            self._finish(hook)
            finished.append(hook)
        self.running = still_running
        for hook in finished:
            self._done(hook.request)
        self._start_queued()

    def _done(self, request: HookRequest) -> None:
        self._busy.discard(request.backup)
        if self.on_done is not None:
            self.on_done(request)

    def _finish(self, hook: RunningHook) -> None:
        status = hook.process.returncode
        if hook.timed_out:
            self._failed(hook.request, 'killed after its timeout of %g s' % hook.request.timeout, hook.errors)
        elif status != 0:
            reason = ('killed by signal %d' % -status) if status < 0 else 'exited with status %d' % status
            self._failed(hook.request, reason, hook.errors)
        else:
            self.counters.hooks_succeeded += 1
        hook.errors.close()

    def _failed(self, request: HookRequest, reason: str, errors: object = None) -> None:
        self.counters.hook_failures += 1
        self.reporter.report('hook:%s:%s' % (request.app_id, request.module), logging.ERROR,
                             'post_rotate %s for %s of %s:%s %s; stderr: %s', request.command[0], request.backup,
                             request.app_id, request.module, reason, _tail(errors))

    def next_wakeup(self, now: float) -> float:
        """Seconds until the next hook's timeout (SIGCHLD wakes the loop for exits)."""
        if not self.running:
            return 3600.0
        return max(0.0, min(min(hook.deadline for hook in self.running) - now, 1.0))

    def stop(self, timeout: float) -> None:
        """At exit: wait up to `timeout` s; hooks still running are left to finish on their own."""
        deadline = self.clock() + timeout
        while self.running and self.clock() < deadline:
            time.sleep(0.05)
            self.reap()
        for hook in self.running:
            log.warning('post_rotate %s for %s still runs at exit; left to finish on its own',
                        hook.request.command[0], hook.request.backup)
        for request in self.queue:
            log.warning('post_rotate %s for %s not run: loghogd stopped first', request.command[0], request.backup)
        self.queue.clear()
        self.running = []
        self._busy.clear()


def _kill_group(process: subprocess.Popen) -> None:
    """The hook and what it started (it leads its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def _tail(errors: object) -> str:
    """The last STDERR_TAIL bytes a hook wrote to stderr, on one line."""
    if errors is None:
        return 'none'
    errors.seek(0, os.SEEK_END)
    size = errors.tell()
    errors.seek(max(0, size - STDERR_TAIL))
    text = errors.read().decode('utf-8', 'replace').strip()
    return ascii(text.replace('\n', ' | '))[1:-1] if text else 'none'
