"""--check-config beyond the syntax: what the configuration points at.

The loaders check each value; this module checks the world those values
name, as far as it can without starting: the TLS files exist and parse,
the directories are usable, the compressor and the post_rotate commands
can be run. Every problem is listed, not only the first.
"""

import os
import pwd
import shutil
import ssl
from typing import List, Optional, Tuple

from loghogd.compressor import FALLBACK
from loghogd.config import Config
from loghogd.facilities import Facilities, Facility


def check_targets(config: Config, facilities: Facilities) -> Tuple[List[str], List[str]]:
    """(errors, warnings) about the files, directories and commands the configuration names."""
    errors: List[str] = []
    warnings: List[str] = []
    errors.extend(_tls_problems(config))
    main = config.main
    if main.user and not _user_exists(main.user):
        errors.append('%s: [main] user = %s: no such user' % (config.path, main.user))
    for key, path in (('logdir', main.logdir), ('workdir', main.workdir), ('rundir', main.rundir)):
        problem = directory_problem(path)
        if problem:
            errors.append('%s: [main] %s = %s: %s' % (config.path, key, path, problem))
    if config.log.filename:
        problem = directory_problem(os.path.dirname(config.log.filename))
        if problem:
            errors.append('%s: [log] filename = %s: %s' % (config.path, config.log.filename, problem))
    compressor = config.compressor.format
    if shutil.which(compressor) is None:
        if compressor == FALLBACK or shutil.which(FALLBACK) is None:
            errors.append('%s: [compressor] format = %s: neither it nor %s is on PATH' % (config.path, compressor,
                                                                                       FALLBACK))
        else:
            warnings.append('%s: [compressor] format = %s: not on PATH; rotated logs would be compressed with %s'
                            % (config.path, compressor, FALLBACK))
    for facility in facilities:
        if facility.post_rotate is not None and not _inherited_hook(facilities, facility):
            problem = command_problem(facility.post_rotate[0])
            if problem:
                errors.append('%s, [%s] post_rotate: %s' % (main.facilities_config, facility.name, problem))
    return errors, warnings


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return name.isdigit()
    return True


def _inherited_hook(facilities: Facilities, facility: Facility) -> bool:
    """A submodule's hook that is its root's is reported once, at the root."""
    root = facilities.lookup(facility.app_id, 'root')
    return facility.module != 'root' and root is not None and root.post_rotate == facility.post_rotate


def _tls_problems(config: Config) -> List[str]:
    server = config.server
    if not server.listen_ssl and not server.listen_syslog_tls:
        return []
    problems = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, path, load in (('pemfile', server.pemfile, context.load_cert_chain),
                            ('cacert', server.cacert, lambda path: context.load_verify_locations(cafile=path)),
                            ('crlfile', server.crlfile, lambda path: context.load_verify_locations(cafile=path))):
        if path is None:
            continue
        try:
            load(path)
        except FileNotFoundError:
            problems.append('%s: [server] %s = %s: no such file' % (config.path, key, path))
        except (OSError, ssl.SSLError) as error:
            problems.append('%s: [server] %s = %s: cannot be loaded: %s' % (config.path, key, path, error))
    return problems


def directory_problem(path: str) -> Optional[str]:
    """Why loghogd could not use or make the directory `path`, or None."""
    existing = path
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if os.path.islink(existing):
        return '%s is a symbolic link' % existing
    if not os.path.isdir(existing):
        return '%s is not a directory' % existing
    if not os.access(existing, os.W_OK | os.X_OK):
        return '%s is not writable by uid %d' % (existing, os.geteuid())
    return None


def command_problem(program: str) -> Optional[str]:
    """Why `program` could not be run, or None."""
    if os.sep in program:
        if not os.path.isfile(program):
            return '%s: no such file' % program
        if not os.access(program, os.X_OK):
            return '%s is not executable' % program
        return None
    if shutil.which(program) is None:
        return '%s is not on PATH (%s)' % (program, os.environ.get('PATH', ''))
    return None
