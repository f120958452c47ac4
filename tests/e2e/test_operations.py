"""loghogd as an init script meets it: detached, locked, reloaded, stopped, asked for its counters."""

import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import threading

import pytest

from loghogd.daemon import process_alive, read_pidfile
from tests.support.accounts import TEST_USER, run_as
from tests.support.daemon import (LOGHOGD, Loghogd, facilities_conf, frame, occupied_tcp_port,
                                  wait_for)
from tests.support.pki import make_pki

FACILITIES = facilities_conf({'app': {}, 'signed': {'secret': 'sekrit'}})
BODY = re.compile(r' - [^ ]* - (?P<body>.*)\n\Z', re.S)


def bodies(lines):
    return [BODY.search(line).group('body') for line in lines]


def internal_log(daemon: Loghogd) -> str:
    try:
        with open(daemon.internal_log, encoding='utf-8') as stream:
            return stream.read()
    except FileNotFoundError:
        return ''


def wait_for_log(daemon: Loghogd, text: str, count: int = 1) -> str:
    wait_for(lambda: internal_log(daemon).count(text) >= count, 10,
             '%r %d time(s) in the internal log' % (text, count))
    return internal_log(daemon)


def proc_status(pid: int) -> dict:
    with open('/proc/%d/status' % pid, encoding='ascii') as stream:
        return dict(line.rstrip('\n').split(':\t', 1) for line in stream if ':\t' in line)


def started_ok(started: subprocess.CompletedProcess) -> None:
    assert started.returncode == 0, 'loghogd -d failed (%d): %s' % (started.returncode, started.stderr)


@pytest.fixture
def daemon(tmp_path):
    running = Loghogd(tmp_path, FACILITIES)
    started_ok(running.start_detached())
    yield running
    running.stop()


# starting and stopping --------------------------------------------------------

def test_start_returns_once_the_ports_accept_and_the_daemon_is_detached(tmp_path):
    daemon = Loghogd(tmp_path, FACILITIES)
    try:
        started = daemon.start_detached()
        with daemon.connect_tcp() as sock:
            sock.sendall(frame('app', 'root', 'right after the start'))
        started_ok(started)
        assert started.stdout == '' and started.stderr == ''
        assert bodies(daemon.wait_for_lines('app/root.log', 1)) == ['right after the start']
        pid = daemon.detached_pid
        assert pid is not None and process_alive(pid)
        assert os.readlink('/proc/%d/cwd' % pid) == '/'
        assert proc_status(pid)['Umask'] == '0027'
        assert all(os.readlink('/proc/%d/fd/%d' % (pid, fd)) == '/dev/null' for fd in (0, 1, 2))
        assert os.getsid(pid) != os.getsid(0) and os.getsid(pid) != pid
        assert 'loghogd %d ready' % pid in internal_log(daemon)
    finally:
        daemon.stop()
    assert not process_alive(pid)
    assert not os.path.exists(daemon.pidfile)
    assert 'stopped: 1 messages written' in internal_log(daemon)


def test_daemon_yes_in_the_config_detaches_like_d(tmp_path):
    daemon = Loghogd(tmp_path, FACILITIES, config={'main': {'daemon': 'yes'}})
    started = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    daemon.detached_pid = read_pidfile(daemon.pidfile)
    try:
        assert os.getsid(daemon.detached_pid) != os.getsid(0)
    finally:
        daemon.stop()
    assert not os.path.exists(daemon.pidfile)


def test_second_start_fails_naming_the_pid_that_holds_the_lock(daemon):
    first = daemon.detached_pid
    second = Loghogd(daemon.directory, FACILITIES).start_detached()
    assert second.returncode != 0
    assert 'already running with PID %d' % first in second.stderr
    assert daemon.pidfile in second.stderr
    assert read_pidfile(daemon.pidfile) == first
    daemon.send_tcp(frame('app', 'root', 'first one still serves'))
    assert bodies(daemon.wait_for_lines('app/root.log', 1)) == ['first one still serves']


def test_foreground_loghogd_holds_the_pid_file_too(tmp_path):
    with Loghogd(tmp_path, FACILITIES) as foreground:
        assert read_pidfile(foreground.pidfile) == foreground.process.pid
        detached = Loghogd(tmp_path, FACILITIES).start_detached()
        assert detached.returncode != 0
        assert 'already running with PID %d' % foreground.process.pid in detached.stderr
    assert not os.path.exists(foreground.pidfile)


def test_kill_9_leaves_a_stale_pid_file_that_does_not_block_the_next_start(daemon):
    killed = daemon.detached_pid
    daemon.kill()
    assert read_pidfile(daemon.pidfile) == killed
    status = subprocess.run([LOGHOGD, '--status', '-c', daemon.config_path], capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 3
    assert 'not running (process %d from %s is gone)' % (killed, daemon.pidfile) in status.stderr
    started = daemon.start_detached()
    started_ok(started)
    assert 'removing the stale PID file %s (process %d is gone)' % (daemon.pidfile, killed) in started.stderr
    assert daemon.detached_pid not in (None, killed)
    daemon.send_tcp(frame('app', 'root', 'after kill -9'))
    assert bodies(daemon.wait_for_lines('app/root.log', 1)) == ['after kill -9']


def test_pid_file_without_a_pid_is_stale_too(tmp_path):
    daemon = Loghogd(tmp_path, FACILITIES)
    os.makedirs(daemon.rundir)
    with open(daemon.pidfile, 'w', encoding='ascii') as stream:
        stream.write('not a pid\n')
    try:
        started = daemon.start_detached()
        started_ok(started)
        assert 'removing the stale PID file %s (no PID in it)' % daemon.pidfile in started.stderr
        assert read_pidfile(daemon.pidfile) == daemon.detached_pid
    finally:
        daemon.stop()


def test_pid_file_that_cannot_be_created_is_a_start_up_error(tmp_path):
    blocker = tmp_path / 'not-a-directory'
    blocker.write_text('')
    daemon = Loghogd(tmp_path, FACILITIES, config={'main': {'pidfile': str(blocker / 'loghogd.pid')}})
    started = daemon.start_detached()
    assert started.returncode == 1
    assert 'cannot create the directory of the PID file %s: ' % (blocker / 'loghogd.pid') in started.stderr


def test_bad_config_with_d_exits_non_zero_with_the_error_on_stderr(tmp_path):
    daemon = Loghogd(tmp_path, FACILITIES, config={'server': {'max_connections': 'many'}})
    started = daemon.start_detached()
    assert started.returncode == 2
    assert daemon.config_path in started.stderr and '[server] max_connections' in started.stderr


def test_port_in_use_with_d_exits_non_zero_with_the_error_on_stderr(tmp_path):
    with occupied_tcp_port() as port:
        daemon = Loghogd(tmp_path, FACILITIES, config={'server': {'listen_ipv4': '127.0.0.1:%d' % port}})
        started = daemon.start_detached()
    assert started.returncode == 1
    assert 'cannot listen on TCP 127.0.0.1:%d' % port in started.stderr
    assert not os.path.exists(daemon.pidfile)
    wait_for(lambda: 'cannot start: cannot listen' in internal_log(daemon), what='the error in the internal log')


def test_unreadable_certificate_with_d_exits_non_zero_naming_the_file(tmp_path):
    broken = tmp_path / 'broken.pem'
    broken.write_text('not a certificate\n')
    daemon = Loghogd(tmp_path, FACILITIES, config={'server': {
        'listen_ipv4_ssl': '127.0.0.1:0', 'pemfile': str(broken), 'cacert': str(broken)}})
    started = daemon.start_detached()
    assert started.returncode == 1
    assert 'cannot load the server certificate and key from %s' % broken in started.stderr
    assert not os.path.exists(daemon.pidfile)


def test_sigterm_with_clients_mid_stream_loses_none_of_their_sent_records(daemon):
    """Records whose sendall() returned before SIGTERM all land, each client's as an unbroken prefix.

    The daemon is stopped (SIGSTOP) while the clients go on, so at SIGTERM
    each connection has hundreds of records waiting unread in the kernel.
    """
    clients = 4
    sent = [0] * clients
    stop = threading.Event()

    def stream(number: int) -> None:
        sock = daemon.connect_tcp()
        try:
            while not stop.is_set():
                batch = b''.join(frame('app', 'root', 'c%d %d' % (number, sent[number] + i)) for i in range(20))
                sock.sendall(batch)
                sent[number] += 20
        except OSError:
            pass
        finally:
            sock.close()
    threads = [threading.Thread(target=stream, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: min(sent) >= 2000, 30, 'every client to have sent 2000 records')
        daemon.send_signal(signal.SIGSTOP)
        unread = list(sent)
        wait_for(lambda: all(now - then >= 500 for now, then in zip(sent, unread)), 30,
                 '500 more records of each client waiting unread in the kernel')
        before = list(sent)
        daemon.send_signal(signal.SIGTERM)
        daemon.send_signal(signal.SIGCONT)
        pid = daemon.detached_pid
        wait_for(lambda: not process_alive(pid), 30, 'loghogd to exit')
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    landed = {number: [] for number in range(clients)}
    for body in bodies(daemon.read_lines('app/root.log')):
        number, index = body[1:].split()
        landed[int(number)].append(int(index))
    for number in range(clients):
        assert landed[number] == list(range(len(landed[number]))), 'client %d has gaps or duplicates' % number
        assert len(landed[number]) >= before[number]
    total = sum(len(indexes) for indexes in landed.values())
    assert 'stopped: %d messages written' % total in internal_log(daemon)
    assert not os.path.exists(daemon.pidfile)


def test_sigint_stops_cleanly_and_removes_the_pid_file(daemon):
    daemon.send_tcp(frame('app', 'root', 'before SIGINT'))
    daemon.wait_for_lines('app/root.log', 1)
    daemon.stop(signal.SIGINT)
    assert not os.path.exists(daemon.pidfile)
    assert 'received SIGINT' in wait_for_log(daemon, 'stopped: 1 messages written')


# reloading ---------------------------------------------------------------------

def test_reload_adds_an_app_while_an_open_connection_keeps_working(daemon):
    sock = daemon.connect_tcp()
    sock.sendall(frame('app', 'root', 'before reload'))
    daemon.wait_for_lines('app/root.log', 1)
    daemon.write_facilities(FACILITIES + '\n[newapp]\nrotate = daily\nbackup_count = 1\n')
    daemon.send_signal(signal.SIGHUP)
    wait_for_log(daemon, 'reloaded %s: 3 facilities' % daemon.facilities_path)
    sock.sendall(frame('newapp', 'root', 'new app on the old connection') + frame('app', 'root', 'after reload'))
    assert bodies(daemon.wait_for_lines('newapp/root.log', 1)) == ['new app on the old connection']
    assert bodies(daemon.wait_for_lines('app/root.log', 2)) == ['before reload', 'after reload']
    sock.close()
    stats = daemon.stats()
    assert stats['connections_accepted'] == 1 and stats['rejected'] == 0


def test_reload_changes_a_secret_for_the_next_message(daemon):
    sock = daemon.connect_tcp()
    sock.sendall(frame('signed', 'root', 'old secret', secret='sekrit'))
    daemon.wait_for_lines('signed/root.log', 1)
    daemon.write_facilities(FACILITIES.replace('secret = sekrit', 'secret = rotated'))
    daemon.send_signal(signal.SIGHUP)
    wait_for_log(daemon, 'reloaded %s' % daemon.facilities_path)
    sock.sendall(frame('signed', 'root', 'old secret again', secret='sekrit')
                 + frame('signed', 'root', 'new secret', secret='rotated'))
    assert bodies(daemon.wait_for_lines('signed/root.log', 2)) == ['old secret', 'new secret']
    wait_for(lambda: daemon.stats()['rejected_by_reason'].get('bad_signature') == 1, what='the old secret refused')
    sock.close()


def test_reload_reopens_the_file_of_a_changed_facility(daemon):
    daemon.send_tcp(frame('app', 'root', 'one file', hostname='web1'))
    daemon.wait_for_lines('app/root.log', 1)
    daemon.write_facilities(FACILITIES.replace('[app]\n', '[app]\nfile_per_host = yes\n'))
    daemon.send_signal(signal.SIGHUP)
    wait_for_log(daemon, 'reloaded %s' % daemon.facilities_path)
    daemon.send_tcp(frame('app', 'root', 'per host now', hostname='web1'))
    assert bodies(daemon.wait_for_lines('app/web1@root.log', 1)) == ['per host now']
    assert bodies(daemon.read_lines('app/root.log')) == ['one file']


def test_broken_reload_keeps_the_old_facilities_and_names_file_and_line(daemon):
    sock = daemon.connect_tcp()
    daemon.write_facilities(FACILITIES + '\n[newapp]\nrotate = sometimes\nbackup_count = 1\n')
    daemon.send_signal(signal.SIGHUP)
    text = wait_for_log(daemon, 'reload failed, keeping the facilities in force')
    line = (FACILITIES + '\n[newapp]\n').count('\n') + 1
    assert '%s, line %d, [newapp] rotate' % (daemon.facilities_path, line) in text
    sock.sendall(frame('app', 'root', 'old facilities still work') + frame('newapp', 'root', 'not yet'))
    assert bodies(daemon.wait_for_lines('app/root.log', 1)) == ['old facilities still work']
    wait_for(lambda: daemon.stats()['rejected_by_reason'].get('unknown_app') == 1, what='newapp rejected')
    sock.close()
    assert process_alive(daemon.detached_pid)


def test_changed_loghogd_conf_is_logged_as_needing_a_restart(daemon):
    with open(daemon.config_path, 'a', encoding='utf-8') as stream:
        stream.write('[stats]\nprometheus_textfile = %s\n' % os.path.join(daemon.directory, 'x.prom'))
    daemon.send_signal(signal.SIGHUP)
    wait_for_log(daemon, '%s changed; restart loghogd to apply it' % daemon.config_path)
    assert process_alive(daemon.detached_pid)


def test_reload_reopens_the_internal_log_after_an_external_rotation(daemon):
    os.rename(daemon.internal_log, daemon.internal_log + '.1')
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: 'reloaded' in internal_log(daemon), what='a new internal log with the reload in it')
    with open(daemon.internal_log + '.1', encoding='utf-8') as moved:
        assert 'loghogd %d ready' % daemon.detached_pid in moved.read()


def test_tls_reload_with_a_broken_certificate_keeps_serving_tls(tmp_path):
    pki = make_pki(tmp_path)
    client = pki.client_pem('web1')
    served_pem = str(tmp_path / 'served.pem')
    shutil.copy(pki.server_pem, served_pem)
    daemon = Loghogd(tmp_path, FACILITIES, pki=pki, config={'server': {'pemfile': served_pem}})
    started_ok(daemon.start_detached())
    try:
        with open(served_pem, 'w', encoding='ascii') as stream:
            stream.write('-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n')
        daemon.send_signal(signal.SIGHUP)
        text = wait_for_log(daemon, 'reload of the TLS files failed, keeping the old ones')
        assert served_pem in text
        with daemon.connect_tls(client) as sock:
            sock.sendall(frame('app', 'root', 'TLS after a broken reload'))
        assert bodies(daemon.wait_for_lines('app/root.log', 1)) == ['TLS after a broken reload']
        shutil.copy(pki.server_pem, served_pem)
        daemon.send_signal(signal.SIGHUP)
        wait_for_log(daemon, 'reloaded %s' % daemon.facilities_path, count=2)
        with daemon.connect_tls(client) as sock:
            sock.sendall(frame('app', 'root', 'TLS after a good reload'))
        assert bodies(daemon.wait_for_lines('app/root.log', 2))[1] == 'TLS after a good reload'
        assert internal_log(daemon).count('reload of the TLS files failed') == 1
    finally:
        daemon.stop()


# counters ------------------------------------------------------------------------

def send_known_traffic(daemon: Loghogd) -> dict:
    """Traffic with exactly known counts; returns what --status must report."""
    good = [frame('app', 'root', 'tcp %d' % i) for i in range(7)]
    signed = [frame('signed', 'root', 'ok', secret='sekrit'), frame('signed', 'root', 'forged', secret='x')]
    udp = [frame('app', 'root', 'udp %d' % i) for i in range(3)]
    daemon.send_tcp(b''.join(good))
    daemon.send_tcp(b''.join(signed))
    for datagram in udp:
        daemon.send_udp(datagram)
    daemon.wait_for_lines('app/root.log', 10)
    daemon.wait_for_lines('signed/root.log', 1)
    return {'accepted': 11, 'app': 10, 'signed': 1, 'bad_signature': 1, 'connections': 2,
            'bytes': sum(map(len, good + signed + udp)), 'frames': len(good + signed + udp)}


def status_number(text: str, label: str, indent: int = 0) -> int:
    match = re.search(r'^%s%s +(\d+)$' % (' ' * indent, re.escape(label)), text, re.M)
    assert match, '%r not in:\n%s' % (label, text)
    return int(match.group(1))


def test_status_prints_exactly_what_was_sent(daemon):
    expected = send_known_traffic(daemon)
    status = subprocess.run([LOGHOGD, '--status', '-c', daemon.config_path], capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0, status.stderr
    text = status.stdout
    assert text.startswith('loghogd ') and 'PID %d' % daemon.detached_pid in text.splitlines()[0]
    assert status_number(text, 'messages accepted') == expected['accepted']
    assert status_number(text, 'app', indent=4) == expected['app']
    assert status_number(text, 'signed', indent=4) == expected['signed']
    assert status_number(text, 'messages rejected') == 1
    assert status_number(text, 'bad_signature', indent=4) == expected['bad_signature']
    assert status_number(text, 'bytes received') == expected['bytes']
    assert status_number(text, 'frames received') == expected['frames']
    assert status_number(text, 'connections accepted') == expected['connections']
    for label in ('connections refused', 'TLS handshake failures', 'rotations', 'compressions', 'write errors'):
        assert status_number(text, label) == 0
    as_json = subprocess.run([LOGHOGD, '--status', '--json', '-c', daemon.config_path], capture_output=True,
                             text=True, timeout=30)
    stats = json.loads(as_json.stdout)
    assert stats['accepted_by_facility'] == {'app:root': 10, 'signed:root': 1}
    assert stats['rejected_by_reason'] == {'bad_signature': 1}
    assert stats['bytes_received'] == expected['bytes'] and stats['pid'] == daemon.detached_pid


def test_status_of_a_stopped_daemon_says_it_is_not_running(daemon):
    daemon.stop()
    status = subprocess.run([LOGHOGD, '--status', '-c', daemon.config_path], capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 3
    assert 'loghogd is not running (no PID file %s)' % daemon.pidfile in status.stderr


def test_sigusr1_writes_the_counters_to_the_internal_log(daemon):
    expected = send_known_traffic(daemon)
    daemon.send_signal(signal.SIGUSR1)
    text = wait_for_log(daemon, 'counters: ')
    counters = json.loads(text.split('counters: ', 1)[1].splitlines()[0])
    assert counters['accepted'] == expected['accepted'] and counters['bytes_received'] == expected['bytes']


def test_prometheus_textfile_holds_the_same_counters(tmp_path):
    textfile = tmp_path / 'metrics' / 'loghogd.prom'
    textfile.parent.mkdir()
    daemon = Loghogd(tmp_path, FACILITIES, config={'stats': {'prometheus_textfile': str(textfile)}})
    started_ok(daemon.start_detached())
    try:
        expected = send_known_traffic(daemon)
        wanted = 'loghogd_received_bytes_total %d\n' % expected['bytes']
        wait_for(lambda: textfile.exists() and wanted in textfile.read_text(), what='the counters in the textfile')
        text = textfile.read_text()
    finally:
        daemon.stop()
    assert os.listdir(textfile.parent) == ['loghogd.prom']
    assert 'loghogd_messages_accepted_total{app="app",facility="app:root"} 10\n' in text
    assert 'loghogd_messages_accepted_total{app="signed",facility="signed:root"} 1\n' in text
    assert 'loghogd_messages_rejected_total{reason="bad_signature"} 1\n' in text
    assert 'loghogd_connections_accepted_total 2\n' in text
    sample = re.compile(r'^(loghogd_[a-z_]+)(\{[a-z_]+="[^"\\\n]*"(,[a-z_]+="[^"\\\n]*")*\})? -?[0-9.e+]+$')
    typed = set()
    for line in text.splitlines():
        if line.startswith('# TYPE '):
            typed.add(line.split()[2])
        elif not line.startswith('# HELP '):
            match = sample.match(line)
            assert match and match.group(1) in typed, line


# privileges -------------------------------------------------------------------------

def test_root_start_drops_to_the_user_after_binding(test_user, open_directory):
    pki = make_pki(os.path.join(open_directory, 'pki'))
    os.chmod(pki.server_pem, 0o600)
    daemon = Loghogd(open_directory, FACILITIES, pki=pki, config={'main': {'user': TEST_USER}})
    started = daemon.start_detached()
    started_ok(started)
    try:
        assert 'a reload (SIGHUP) will fail; %s not readable by user %s' % (pki.server_pem, TEST_USER) \
            in started.stderr
        status = proc_status(daemon.detached_pid)
        assert status['Uid'].split() == [str(test_user.pw_uid)] * 4
        assert status['Gid'].split() == [str(test_user.pw_gid)] * 4
        assert status['Groups'].strip() == ''
        daemon.send_tcp(frame('app', 'root', 'written by the user'))
        daemon.wait_for_lines('app/root.log', 1)
        for path in (daemon.path('app/root.log'), daemon.path('app'), daemon.logdir, daemon.workdir,
                     daemon.internal_log, os.path.join(daemon.rundir, 'listening.json')):
            owner = os.stat(path)
            assert (owner.st_uid, owner.st_gid) == (test_user.pw_uid, test_user.pw_gid), path
        pidfile = os.stat(daemon.pidfile)
        assert (pidfile.st_uid, stat.S_IMODE(pidfile.st_mode)) == (0, 0o644)
        daemon.send_signal(signal.SIGHUP)
        text = wait_for_log(daemon, 'reload of the TLS files failed, keeping the old ones')
        assert 'not readable by user %s (uid %d)' % (TEST_USER, test_user.pw_uid) in text
        with daemon.connect_tls(pki.client_pem('web1')) as sock:
            sock.sendall(frame('app', 'root', 'TLS still served'))
        daemon.wait_for_lines('app/root.log', 2)
        pid = daemon.detached_pid
    finally:
        daemon.stop()
    assert read_pidfile(daemon.pidfile) == pid and not process_alive(pid)
    wait_for_log(daemon, 'leaving the PID file %s to root' % daemon.pidfile)


def test_a_setgid_log_directory_keeps_its_group_after_the_drop(test_user, open_directory):
    """The Debian way to let group adm read the logs: the directory's group, with setgid, reaches every file."""
    try:
        admins = grp.getgrnam('adm').gr_gid
    except KeyError:
        pytest.skip('no group adm on this system')
    daemon = Loghogd(open_directory, FACILITIES, config={'main': {'user': TEST_USER}})
    internal_log = os.path.join(daemon.logdir, 'loghogd.log')
    daemon.write_config({'main': {'user': TEST_USER}, 'log': {'filename': internal_log, 'level': 'INFO'}})
    os.makedirs(daemon.logdir)
    os.chown(daemon.logdir, 0, admins)
    os.chmod(daemon.logdir, 0o2750)
    started_ok(daemon.start_detached())
    try:
        daemon.send_tcp(frame('app', 'root', 'readable by the admins'))
        daemon.wait_for_lines('app/root.log', 1)
        expected = {daemon.logdir: 0o2750, daemon.path('app'): 0o2750, daemon.path('app/root.log'): 0o640,
                    internal_log: 0o640}
        for path, mode in expected.items():
            info = os.stat(path)
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (test_user.pw_uid, admins, mode), path
        workdir = os.stat(daemon.workdir)
        assert (workdir.st_uid, workdir.st_gid) == (test_user.pw_uid, test_user.pw_gid)
    finally:
        daemon.stop()


def run_as_test_user(daemon: Loghogd, user: pwd.struct_passwd, command: tuple) -> subprocess.CompletedProcess:
    prefix, environment = command
    for top, directories, files in os.walk(daemon.directory):
        for name in [top] + [os.path.join(top, entry) for entry in directories + files]:
            os.chown(name, user.pw_uid, user.pw_gid)
    return run_as(user, prefix + ['-c', daemon.config_path, '-d'], env=environment)


def test_non_root_start_as_another_user_is_refused(test_user, open_directory, user_loghogd):
    daemon = Loghogd(open_directory, FACILITIES, config={'main': {'user': 'root'}})
    started = run_as_test_user(daemon, test_user, user_loghogd)
    assert started.returncode == 1
    assert 'user = root: only root can switch to that user, but loghogd was started as %s' % TEST_USER \
        in started.stderr


def test_non_root_start_as_that_user_warns_and_runs(test_user, open_directory, user_loghogd):
    daemon = Loghogd(open_directory, FACILITIES, config={'main': {'user': TEST_USER}})
    started = run_as_test_user(daemon, test_user, user_loghogd)
    assert started.returncode == 0, started.stderr
    assert 'started as %s itself, not as root' % TEST_USER in started.stderr
    daemon.detached_pid = read_pidfile(daemon.pidfile)
    try:
        assert proc_status(daemon.detached_pid)['Uid'].split()[0] == str(test_user.pw_uid)
    finally:
        daemon.stop()


def test_status_as_a_user_who_may_not_read_the_rundir_says_so(test_user, open_directory, user_loghogd):
    """The rundir is 0750: another user learns it may not look, not that loghogd is down."""
    prefix, environment = user_loghogd
    with Loghogd(open_directory, FACILITIES) as daemon:
        for path in (daemon.config_path, daemon.facilities_path):
            os.chmod(path, 0o644)
        assert stat.S_IMODE(os.stat(daemon.rundir).st_mode) == 0o750
        status = run_as(test_user, prefix + ['--status', '-c', daemon.config_path], env=environment)
    assert status.returncode == 4, status.stderr
    assert 'cannot read the status: %s: permission denied' % daemon.pidfile in status.stderr
    assert 'member of group root (the group of %s)' % daemon.rundir in status.stderr


def test_status_counts_rotations_and_compressions_as_they_happened(daemon):
    daemon.send_tcp(b''.join(frame('app', 'root', 'to rotate %d' % i) for i in range(3)))
    daemon.wait_for_lines('app/root.log', 3)
    daemon.send_signal(signal.SIGUSR2)

    def archives():
        found = [os.path.join(current, name) for current, _directories, files in os.walk(daemon.directory)
                 for name in files if re.search(r'\.log\.[-0-9]+', name)]
        done = [path for path in found if path.endswith(('.xz', '.gz', '.bz2'))]
        return done if done and len(done) == len(found) else None
    compressed = wait_for(archives, 30, 'every rotated file compressed')
    assert any(path.startswith(daemon.path('app/root.log.')) for path in compressed)
    status = subprocess.run([LOGHOGD, '--status', '-c', daemon.config_path], capture_output=True, text=True,
                            timeout=30)
    assert status_number(status.stdout, 'rotations') == len(compressed)
    assert status_number(status.stdout, 'compressions') == len(compressed)
    assert status_number(status.stdout, 'compression failures') == 0
