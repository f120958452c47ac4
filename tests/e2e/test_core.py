"""The core daemon as a user meets it: a real loghogd, real sockets, real files."""

import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from loghog.protocol import HEADER, encode_frame
from tests.support.daemon import (LINE, LOGHOGD, Loghogd, bodies, facilities_conf, frame, occupied_tcp_port,
                                  wait_for)

FACILITIES = facilities_conf({'app': {}, 'app:web': {}, 'signed': {'secret': 'sekrit'}, 'perhost': {'file_per_host': 'yes'}})
UNICODE_BODY = 'hello wörld ☃ 😀 \u202e'


@pytest.fixture
def daemon(tmp_path):
    with Loghogd(tmp_path, FACILITIES) as running:
        yield running


def test_tcp_record_lands_with_the_exact_line_format(daemon):
    daemon.send_tcp(frame('app', 'root', UNICODE_BODY, 'web1'))
    [line] = daemon.wait_for_lines('app/root.log', 1)
    match = LINE.match(line)
    assert match, line
    assert match.group('host') == 'web1'
    assert match.group('body') == UNICODE_BODY.replace('\u202e', '\\u202e'), 'a bidi control is escaped'
    received = time.strptime(line[:19], '%Y-%m-%d %H:%M:%S')
    assert abs(time.mktime(received) - time.time()) < 60


def test_udp_zlib_and_submodule_routing(daemon):
    daemon.send_udp(frame('app', 'root', 'over udp'))
    daemon.send_tcp(frame('app', 'web.requests', 'compressed ☃', compress=True))
    daemon.send_tcp(frame('app', 'cron', 'falls back to root'))
    assert sorted(bodies(daemon.wait_for_lines('app/root.log', 2))) == ['falls back to root', 'over udp']
    assert bodies(daemon.wait_for_lines('app/web.log', 1)) == ['compressed ☃']


def test_signed_records_land_and_bad_signatures_are_dropped_and_counted(daemon):
    daemon.send_tcp(frame('signed', 'root', 'good', secret='sekrit') + frame('signed', 'root', 'forged', secret='x')
                    + frame('signed', 'root', 'unsigned') + frame('signed', 'root', 'after'  , secret=b'sekrit'))
    assert bodies(daemon.wait_for_lines('signed/root.log', 2)) == ['good', 'after']
    stats = daemon.stats()
    assert stats['rejected_by_reason']['bad_signature'] == 2
    assert stats['rejected_by_app']['signed'] == 2
    assert 'bad_signature' in daemon.output()


def test_multiline_traceback_and_7kb_body_arrive_whole(daemon):
    traceback = 'boom\nTraceback (most recent call last):\n  File "x.py", line 1\nValueError: bad\n'
    large = ''.join('%06d ' % i for i in range(1000))[:7000]
    daemon.send_tcp(frame('app', 'root', traceback) + frame('app', 'root', large))
    daemon.send_udp(frame('app', 'root', large))
    text = ''.join(daemon.wait_for_lines('app/root.log', 7))
    assert ' - testhost - ' + traceback + '\n' in text
    assert text.count(' - testhost - ' + large + '\n') == 2


def test_frames_split_one_byte_at_a_time_and_joined_many_per_write(daemon):
    data = b''.join(frame('app', 'root', 'joined %d' % i) for i in range(500))
    with daemon.connect_tcp() as sock:
        for i in range(0, 200):
            sock.send(data[i:i + 1])
        sock.sendall(data[200:])
    assert bodies(daemon.wait_for_lines('app/root.log', 500)) == ['joined %d' % i for i in range(500)]


def test_bad_input_costs_only_that_peer(daemon):
    good = daemon.connect_tcp()
    good.sendall(frame('app', 'root', 'before'))
    daemon.send_tcp(b'GET / HTTP/1.1\r\n\r\n')
    daemon.send_tcp(HEADER.pack(0xFFFFFFF0, 0) + b'x' * 100)
    daemon.send_tcp(frame('app', 'root', 'whole') + frame('app', 'root', 'cut off')[:-5])
    daemon.send_tcp(frame('nosuchapp', 'root', 'unknown'))
    daemon.send_tcp(encode_frame(b'{not json') + encode_frame(b'[1, 2]') + encode_frame(b'{"app_id": 5}'))
    daemon.send_udp(b'short')
    good.sendall(frame('app', 'root', 'after'))
    good.close()
    lines = daemon.wait_for_lines('app/root.log', 3)
    assert sorted(bodies(lines)) == ['after', 'before', 'whole']
    reasons = wait_for(lambda: (lambda s: s if s['rejected'] >= 8 else None)(daemon.stats()),
                       what='8 rejections')['rejected_by_reason']
    assert reasons == {'oversized': 2, 'truncated': 2, 'unknown_app': 1, 'bad_json': 2, 'bad_field': 1}
    assert daemon.process.poll() is None


def test_suppressed_reports_are_summed_up_though_no_later_report_comes(daemon):
    """A burst of bad frames, then silence: the summary still reaches the log when the window ends."""
    daemon.send_tcp(b''.join(frame('nosuchapp', 'root', 'x %d' % number) for number in range(12)))
    wait_for(lambda: daemon.stats()['rejected_by_reason'].get('unknown_app') == 12, what='12 rejections')
    output = daemon.wait_for_output('more reports of reject:unknown_app were suppressed', timeout=30)
    assert '7 more reports of reject:unknown_app were suppressed' in output
    assert output.count('rejected a message from 127.0.0.1:') == 5


def test_hostname_with_path_parts_stays_inside_logdir(daemon):
    for hostname in ('../../etc', '/etc/passwd', 'a\x00b', '..', '', 'x' * 4000, 'wеb1'):
        daemon.send_tcp(frame('perhost', 'root', 'from %r' % hostname[:10], hostname))
    wait_for(lambda: daemon.stats()['accepted'] == 7, what='7 accepted records')
    names = sorted(os.listdir(daemon.path('perhost')))
    assert all(name.endswith('@root.log') and '/' not in name for name in names), names
    assert '.._.._etc@root.log' not in names and '_.._etc@root.log' in names
    for top, directories, files in os.walk(daemon.directory):
        for name in directories + files:
            assert os.path.realpath(os.path.join(top, name)).startswith(os.path.realpath(daemon.directory))


def test_files_and_directories_are_private(daemon):
    daemon.send_tcp(frame('app', 'root', 'private'))
    daemon.wait_for_lines('app/root.log', 1)
    assert os.stat(daemon.path('app')).st_mode & 0o777 == 0o750
    assert os.stat(daemon.path('app/root.log')).st_mode & 0o777 == 0o640


def test_sigterm_reads_what_clients_already_sent(daemon):
    sock = daemon.connect_tcp()
    sock.sendall(b''.join(frame('app', 'root', 'queued %d' % i) for i in range(20000)))
    daemon.send_signal(signal.SIGSTOP)
    daemon.send_signal(signal.SIGTERM)
    daemon.send_signal(signal.SIGCONT)
    assert daemon.process.wait(30) == 0
    sock.close()
    assert len(daemon.read_lines('app/root.log')) == 20000


def test_idle_client_is_never_closed_and_never_sent_a_byte(daemon):
    sock = daemon.connect_tcp()
    sock.sendall(frame('app', 'root', 'first'))
    daemon.wait_for_lines('app/root.log', 1)
    sock.settimeout(1.5)
    with pytest.raises(socket.timeout):
        sock.recv(1)
    sock.sendall(frame('app', 'root', 'second'))
    assert bodies(daemon.wait_for_lines('app/root.log', 2)) == ['first', 'second']
    sock.close()


def test_command_line_help_version_and_check_config(tmp_path):
    daemon = Loghogd(tmp_path, FACILITIES)
    assert 'usage: loghogd' in subprocess.run([LOGHOGD, '--help'], capture_output=True, text=True).stdout
    assert subprocess.run([LOGHOGD, '--version'], capture_output=True, text=True).stdout.startswith('loghogd ')
    checked = subprocess.run(daemon.command('--check-config'), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    daemon.write_facilities('[app:web]\nrotate = daily\nbackup_count = 1\n')
    checked = subprocess.run(daemon.command('--check-config'), capture_output=True, text=True)
    assert checked.returncode != 0
    assert daemon.facilities_path in checked.stderr and '[app:web]' in checked.stderr


def test_config_error_at_start_exits_non_zero_naming_file_section_key(tmp_path):
    daemon = Loghogd(tmp_path, FACILITIES, config={'server': {'default_port': 'abc'}})
    started = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30)
    assert started.returncode != 0
    assert daemon.config_path in started.stderr
    assert '[server]' in started.stderr and 'default_port' in started.stderr


def test_port_in_use_is_a_clear_start_up_error(tmp_path):
    with occupied_tcp_port() as port:
        daemon = Loghogd(tmp_path, FACILITIES, config={'server': {'listen_ipv4': '127.0.0.1:%d' % port}})
        started = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30)
    assert started.returncode != 0
    assert 'cannot listen on TCP 127.0.0.1:%d' % port in started.stderr


def test_udp_datagram_at_the_protocol_limit_is_accepted(daemon):
    overhead = len(frame('app', 'root', ''))
    body = 'u' * (65507 - overhead)
    daemon.send_udp(frame('app', 'root', body))
    assert bodies(daemon.wait_for_lines('app/root.log', 1)) == [body]
    assert struct.calcsize('!LL') == 8
