"""Becoming a well-kept Unix daemon: detaching, the PID lock, dropping root.

Detaching uses python-daemon's DaemonContext, the PID file lockfile's
PIDLockFile (through python-daemon's TimeoutPIDLockFile). What they do not
give is a start-up an init script can trust: the process that was started
must exit 0 only once the daemon serves, and print the daemon's start-up
error otherwise. So the starting process forks, the child detaches, and the
final daemon reports over a pipe once its sockets are bound and its lock is
held; the starting process waits for that word and exits accordingly.
"""

import grp
import json
import logging
import os
import pwd
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import daemon
import daemon.pidfile
import lockfile

from loghogd import safefs

log = logging.getLogger('loghogd')

START_TIMEOUT = 30.0
PIDFILE_MODE = 0o644
DAEMON_UMASK = 0o027
# Job-control signals mean nothing to a daemon; every other signal that
# loghogd handles is routed to the service's own flag-setting handlers.
TTY_SIGNAL_MAP = {signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None}


class DaemonError(Exception):
    """loghogd cannot start as a daemon; the message is for the operator."""


# The PID lock ----------------------------------------------------------------

def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie nobody reaped counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as stat:
            state = stat.read().rpartition(')')[2].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True
    return state not in ('Z', 'X')


def read_pidfile(path: str) -> Optional[int]:
    """The PID written in `path`; None when it is missing, not a number, or a link or FIFO put in its place."""
    try:
        fd = safefs.open_file(os.path.dirname(path), path, os.O_RDONLY)
    except OSError:
        return None
    with open(fd, encoding='ascii', errors='replace') as stream:
        try:
            return int(stream.readline(32).strip())
        except ValueError:
            return None


class PidLock:
    """The PID file, held for the daemon's whole life.

    Another loghogd holding it stops this one with its PID in the message;
    a PID file whose process is gone (kill -9, power loss) is stale and is
    replaced.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = daemon.pidfile.TimeoutPIDLockFile(path, acquire_timeout=0)
        self.held = False

    def acquire(self) -> None:
        """Take the lock for this process; DaemonError if another holds it."""
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        except OSError as error:
            raise DaemonError('cannot create the directory of the PID file %s: %s'
                              % (self.path, error.strerror or error)) from None
        for _ in range(3):
            try:
                self._lock.acquire()
            except (lockfile.AlreadyLocked, lockfile.LockTimeout):
                self._break_if_stale()
                continue
            except lockfile.LockFailed as error:
                cause = error.__context__
                raise DaemonError('cannot create the PID file %s: %s' % (
                    self.path, getattr(cause, 'strerror', None) or cause or error)) from None
            self.held = True
            try:
                _make_readable(self.path)
            except OSError as error:
                self.release()
                raise DaemonError('cannot take the PID file %s: %s' % (self.path, error.strerror or error)) from None
            return
        raise DaemonError('cannot take the PID file %s: other processes keep creating it' % self.path)

    def _break_if_stale(self) -> None:
        holder = read_pidfile(self.path)
        if holder is not None and holder != os.getpid() and process_alive(holder):
            raise DaemonError('loghogd is already running with PID %d (it holds the PID file %s)'
                              % (holder, self.path))
        log.warning('removing the stale PID file %s (%s)', self.path,
                    'no PID in it' if holder is None else 'process %d is gone' % holder)
        self._lock.break_lock()

    def release(self) -> None:
        """Remove the PID file at exit; a file another process owns is left alone.

        After the privilege drop the PID file is root's, in a directory where
        the daemon's user cannot remove it: it is left for the init system
        (systemd removes a PIDFile=) or the next start, which finds it stale.
        """
        if not self.held:
            return
        self.held = False
        if os.geteuid() != 0 and _owner(self.path) == 0:
            log.info('leaving the PID file %s to root: the next start or the init system removes it', self.path)
            return
        try:
            self._lock.release()
        except (lockfile.NotLocked, lockfile.NotMyLock):
            log.warning('the PID file %s was removed or taken over by another process; left as it is',
                        self.path)
        except OSError as error:
            log.error('cannot remove the PID file %s: %s (its directory must be writable by the user '
                      'loghogd runs as)', self.path, error.strerror or error)


def _make_readable(path: str) -> None:
    """PIDFILE_MODE on the new PID file, through a descriptor: a link put in its place is not followed."""
    fd = safefs.open_file(os.path.dirname(path), path, os.O_RDONLY)
    try:
        os.fchmod(fd, PIDFILE_MODE)
    finally:
        os.close(fd)


def _owner(path: str) -> Optional[int]:
    try:
        return os.stat(path, follow_symlinks=False).st_uid
    except OSError:
        return None


# The user to run as ------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    """The unprivileged user loghogd drops to after binding its sockets."""
    name: str
    uid: int
    gid: int


def resolve_user(name: Optional[str]) -> Optional[Account]:
    """The account to switch to, or None when the process stays as it is.

    Only root can switch. A non-root process already running as `name`
    carries on with a warning; any other non-root start is an error.
    """
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise DaemonError('[main] user = %s: no such user' % name) from None
    euid = os.geteuid()
    if euid == 0:
        return Account(name, entry.pw_uid, entry.pw_gid)
    current = _user_name(euid)
    if euid == entry.pw_uid:
        log.warning('[main] user = %s: loghogd was started as %s itself, not as root; it keeps running '
                    'as %s (no privileges to drop)', name, current, current)
        return None
    raise DaemonError('[main] user = %s: only root can switch to that user, but loghogd was started as %s '
                      '(uid %d); start it as root or as %s' % (name, current, euid, name))


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def drop_privileges(account: Account) -> None:
    """Become the account: its group, no supplementary groups.

    Everything that needs root (low ports, the PID file, reading the TLS
    key, handing the directories over) must be done before this call.
    """
    os.setgroups([])
    os.setgid(account.gid)
    os.setuid(account.uid)
    log.info('running as user %s (uid %d, group %s)', account.name, account.uid, _group_name(account.gid))


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def unreadable_hint(paths: Iterable[Optional[str]]) -> str:
    """'' or a sentence naming the files this process cannot read, for an error message."""
    unreadable = [path for path in paths if path and not os.access(path, os.R_OK)]
    if not unreadable:
        return ''
    return '; %s not readable by user %s (uid %d), which loghogd runs as' % (
        ', '.join(unreadable), _user_name(os.geteuid()), os.geteuid())


# Detaching ----------------------------------------------------------------------

class StartupReport:
    """The daemon's side of the pipe: warnings while it starts, then ready or failed.

    Each message is one JSON line; the starting process prints warnings and
    the error to its stderr, which is still the operator's terminal.
    """

    def __init__(self, fd: int) -> None:
        self._fd: Optional[int] = fd
        self._relay = _RelayHandler(self)
        log.addHandler(self._relay)

    def send(self, kind: str, text: str) -> None:
        if self._fd is None:
            return
        data = (json.dumps({kind: text}) + '\n').encode('utf-8')
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError:
            self._close()

    def ready(self) -> None:
        """Sockets bound, lock held, privileges dropped: let the starter exit 0."""
        self.send('ready', str(os.getpid()))
        self._close()

    def failed(self, text: str) -> None:
        self.send('error', text)
        self._close()

    def _close(self) -> None:
        log.removeHandler(self._relay)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _RelayHandler(logging.Handler):
    """Start-up warnings go to the operator's terminal, not only to the log file."""

    def __init__(self, report: StartupReport) -> None:
        super().__init__(logging.WARNING)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        self._report.send('warning', record.getMessage())


def run_detached(serve: Callable[[StartupReport], int], held_signals: Iterable[int],
                 timeout: float = START_TIMEOUT) -> int:
    """Run `serve` in a detached daemon process; return the exit status of this process.

    In the starting process the status is 0 once the daemon called
    `report.ready()`, else 1 with its error on stderr. In the daemon the
    status is what `serve` returned. `held_signals` stay blocked from the
    fork until `serve` unblocks them (once its handlers are in place), so
    a SIGTERM during start-up is handled, not fatal.
    """
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child:
        os.close(write_fd)
        try:
            return _wait_for_daemon(read_fd, timeout)
        finally:
            os.close(read_fd)
            os.waitpid(child, 0)
    os.close(read_fd)
    signal.pthread_sigmask(signal.SIG_BLOCK, held_signals)
    context = daemon.DaemonContext(umask=DAEMON_UMASK, working_directory='/', detach_process=True,
                                   files_preserve=[write_fd], signal_map=TTY_SIGNAL_MAP)
    try:
        context.open()
    except daemon.daemon.DaemonError as error:
        os.write(write_fd, (json.dumps({'error': 'cannot detach: %s' % error}) + '\n').encode('utf-8'))
        os._exit(1)
    report = StartupReport(write_fd)
    try:
        return serve(report)
    except BaseException as error:
        report.failed('unexpected start-up error: %r' % error)
        raise
    finally:
        report.failed('loghogd stopped before it was ready')
        context.close()


def _wait_for_daemon(fd: int, timeout: float) -> int:
    """Relay the daemon's start-up messages; 0 only for its 'ready'."""
    deadline = time.monotonic() + timeout
    buffered = b''
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            print('loghogd: the daemon did not report that it is ready within %.0f s; '
                  'see its log file' % timeout, file=sys.stderr)
            return 1
        data = os.read(fd, 65536)
        if not data:
            print('loghogd: the daemon exited during start-up without saying why; see its log file',
                  file=sys.stderr)
            return 1
        buffered += data
        *lines, buffered = buffered.split(b'\n')
        for line in lines:
            status = _relay_message(line)
            if status is not None:
                return status


def _relay_message(line: bytes) -> Optional[int]:
    try:
        [(kind, text)] = json.loads(line.decode('utf-8')).items()
    except (ValueError, AttributeError):
        print('loghogd: unreadable start-up message from the daemon: %r' % line[:200], file=sys.stderr)
        return None
    if kind == 'ready':
        return 0
    if kind == 'error':
        print('loghogd: %s' % text, file=sys.stderr)
        return 1
    print('loghogd: warning: %s' % text, file=sys.stderr)
    return None
