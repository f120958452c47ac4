"""The share each peer may take: connections, buffered bytes, time, inflated bytes; TLS sessions.

Peers that must count as different addresses connect from their own
loopback address (127.x.y.z all reach 127.0.0.1 on Linux). Every limit
reached is checked three ways: what the peer sees, the `--status` counter
and the daemon's log line naming the peer.
"""

import re
import socket
import ssl
import threading
import time
import zlib

import pytest

from loghog.protocol import FLAG_ZLIB, HEADER, encode_frame
from tests.e2e.test_hardening import raise_open_files
from tests.support.daemon import Loghogd, bodies, facilities_conf, frame, wait_for
from tests.support.pki import make_pki

FACILITIES = facilities_conf({'app': {}, 'app:web': {}, 'app:big': {}})
MiB = 1024 * 1024
RSS_LIMIT_MB = 192
"""docs/operations.md: with the default limits, 2 000 stalled 1 MiB frames keep the daemon under this."""


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp('pki')))


def connect_from(daemon: Loghogd, source: str, transport: str = 'tcp') -> socket.socket:
    return socket.create_connection(('127.0.0.1', daemon.ports[transport]), timeout=5, source_address=(source, 0))


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the server closes `sock` within `timeout` (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b''
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def peak_resident_mb(pid: int) -> float:
    with open('/proc/%d/status' % pid, encoding='ascii') as stream:
        return int([line for line in stream if line.startswith('VmHWM:')][0].split()[1]) / 1024


def compressed_frame(body: str, module: str = 'big') -> bytes:
    return compress(frame('app', module, body))


def compress(plain: bytes) -> bytes:
    """A frame with its payload zlib-compressed."""
    return encode_frame(zlib.compress(plain[HEADER.size:]), FLAG_ZLIB)


# unfinished frames --------------------------------------------------------------------------

def test_2000_peers_stalled_in_large_frames_keep_memory_bounded_and_a_good_client_lands(tmp_path):
    """Defaults as shipped: each peer sends 3/4 of a 1 MiB frame and stops; the oldest give way."""
    raise_open_files(4500)
    peers = 2000
    partial = HEADER.pack(MiB, 0) + b'{' * (3 * MiB // 4)
    with Loghogd(tmp_path, FACILITIES) as daemon:
        good = daemon.connect_tcp()
        stalled = []
        for number in range(peers):
            try:
                sock = connect_from(daemon, '127.1.%d.%d' % (number // 250, number % 250 + 1))
                stalled.append(sock)
                sock.sendall(partial)
            except OSError:
                pass
            if number % 100 == 0:
                good.sendall(frame('app', 'web', 'good %d' % (number // 100)))
                good.sendall(frame('app', 'big', 'large %d ' % (number // 100) + 'x' * (MiB // 2)))
        wait_for(lambda: daemon.stats()['connections_accepted'] >= peers + 1, 60, 'every peer accepted')
        lines = daemon.wait_for_lines('app/web.log', peers // 100, timeout=30)
        large = daemon.wait_for_lines('app/big.log', peers // 100, timeout=30)
        stats = daemon.stats()
        peak = peak_resident_mb(daemon.process.pid)
        output = daemon.output()
        assert still_open(good)
        for sock in stalled:
            sock.close()
        good.close()
    print('\n%d stalled 768 KiB frames: peak RSS %.0f MB, %d connections closed at the buffer limit, '
          '%d bytes buffered at the end' % (peers, peak, stats['connections_closed_buffer_full'],
                                            stats['buffered_bytes']))
    assert bodies(lines) == ['good %d' % i for i in range(peers // 100)]
    assert [body.split(' ')[:2] for body in bodies(large)] == [['large', str(i)] for i in range(peers // 100)]
    assert stats['buffered_bytes'] <= 64 * MiB
    assert stats['connections_closed_buffer_full'] >= peers // 2
    assert '(max_buffered_bytes;' in output and 'closing the connection from 127.1.' in output
    assert peak < RSS_LIMIT_MB


def test_one_address_holds_at_most_its_share_of_unfinished_frames(tmp_path):
    size = 64 * 1024
    config = {'server': {'max_message_size': str(size), 'max_buffered_bytes_per_peer': '256K'}}
    partial = HEADER.pack(size, 0) + b'{' * (60 * 1024)
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        other = connect_from(daemon, '127.0.0.3')
        other.sendall(partial)
        hog = []
        for _ in range(4):
            hog.append(connect_from(daemon, '127.0.0.2'))
            hog[-1].sendall(partial)
        wait_for(lambda: daemon.stats()['buffered_bytes'] == 5 * len(partial), 10, 'five partial frames held')
        over = connect_from(daemon, '127.0.0.2')
        over.sendall(partial)
        assert closed_by_server(over)
        assert all(still_open(sock) for sock in hog + [other])
        other.setblocking(True)
        other.sendall(b'{' * (size - 60 * 1024) + frame('app', 'web', 'other'))
        lines = daemon.wait_for_lines('app/web.log', 1)
        stats = daemon.stats()
        output = daemon.output()
        for sock in hog + [other, over]:
            sock.close()
    assert bodies(lines) == ['other']
    assert stats['connections_closed_buffer_full'] == 1
    assert 'closing the connection from 127.0.0.2:' in output and '(max_buffered_bytes_per_peer' in output


@pytest.mark.parametrize('option, stalled_sends, counter', [
    ('frame_timeout', frame('app', 'web', 'half')[:20], 'frames_timed_out'),
    ('idle_timeout', b'', 'connections_closed_idle'),
])
def test_a_stalled_connection_is_closed_and_a_quiet_client_kept(tmp_path, option, stalled_sends, counter):
    """frame_timeout: a started frame must be finished; idle_timeout: a first frame must come.

    A client that has sent complete frames may idle past both: it is kept.
    """
    with Loghogd(tmp_path, FACILITIES, config={'server': {option: '1'}}) as daemon:
        quiet = daemon.connect_tcp()
        quiet.sendall(frame('app', 'web', 'first'))
        daemon.wait_for_lines('app/web.log', 1)
        stalled = connect_from(daemon, '127.0.0.2')
        stalled.sendall(stalled_sends)
        assert closed_by_server(stalled)
        time.sleep(0.5)  # the quiet client idles past the timeout too
        assert still_open(quiet)
        quiet.setblocking(True)
        quiet.sendall(frame('app', 'web', 'second'))
        lines = daemon.wait_for_lines('app/web.log', 2)
        stats = daemon.stats()
        output = daemon.output()
        stalled.close()
        quiet.close()
    assert bodies(lines) == ['first', 'second']
    assert stats[counter] == 1
    assert 'closing the connection from 127.0.0.2:' in output and '(%s)' % option in output


# keepalive, connections per address, the TLS reserve ----------------------------------------

def server_side_timer(local_port: int, remote_port: int) -> str:
    """The `tr` column of the daemon's end of a connection in /proc/net/tcp (2: keepalive timer)."""
    with open('/proc/net/tcp', encoding='ascii') as table:
        for line in table:
            fields = line.split()
            if fields[1].endswith(':%04X' % local_port) and fields[2].endswith(':%04X' % remote_port):
                return fields[5].split(':')[0]
    return ''


def test_accepted_connections_have_tcp_keepalive(tmp_path, pki):
    with Loghogd(tmp_path, FACILITIES, pki=pki) as daemon:
        for transport in ('tcp', 'tls'):
            with daemon.connect_tcp() if transport == 'tcp' else connect_from(daemon, '127.0.0.1', 'tls') as sock:
                port = sock.getsockname()[1]
                wait_for(lambda: server_side_timer(daemon.ports[transport], port) == '02', 5,
                         'a keepalive timer on the daemon end of a %s connection' % transport)


def test_one_address_gets_at_most_max_connections_per_address(tmp_path):
    with Loghogd(tmp_path, FACILITIES, config={'server': {'max_connections_per_address': '5'}}) as daemon:
        held = [connect_from(daemon, '127.0.0.2') for _ in range(5)]
        wait_for(lambda: daemon.stats()['connections_open'] == 5, 10, 'five connections open')
        refused = connect_from(daemon, '127.0.0.2')
        assert closed_by_server(refused)
        with connect_from(daemon, '127.0.0.3') as other:
            other.sendall(frame('app', 'web', 'from another address'))
            lines = daemon.wait_for_lines('app/web.log', 1)
        assert all(still_open(sock) for sock in held)
        stats = daemon.stats()
        output = daemon.output()
        for sock in held + [refused]:
            sock.close()
    assert bodies(lines) == ['from another address']
    assert stats['connections_refused_per_address'] == 1 and stats['connections_refused'] == 1
    assert 'refused a connection from 127.0.0.2:' in output and '(max_connections_per_address)' in output


def test_a_plain_tcp_flood_leaves_slots_for_tls_clients(tmp_path, pki):
    config = {'server': {'max_connections': '64'}}
    with Loghogd(tmp_path, FACILITIES, pki=pki, config=config) as daemon:
        flood = []
        for number in range(64):
            flood.append(connect_from(daemon, '127.2.0.%d' % (number + 1)))
        wait_for(lambda: daemon.stats()['connections_refused'] >= 32, 10, 'the plain pool full')
        with daemon.connect_tls(pki.client_pem('good')) as sock:
            sock.sendall(b''.join(frame('app', 'web', 'tls %d' % i) for i in range(100)))
            lines = daemon.wait_for_lines('app/web.log', 100)
        stats = daemon.stats()
        for sock in flood:
            sock.close()
    assert bodies(lines) == ['tls %d' % i for i in range(100)]
    assert stats['connections_refused'] == 32
    assert stats['tls_failures'] == 0


# TLS handshakes ----------------------------------------------------------------------------

def tls_client_context(daemon: Loghogd, client_pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(daemon.pki.ca_cert)
    context.load_cert_chain(client_pem)
    return context


def test_a_handshake_over_a_slow_link_gets_in_with_the_default_timeout(tmp_path, pki):
    """The client waits 1.5 s before its ClientHello, as a link with a long round trip would."""
    with Loghogd(tmp_path, FACILITIES, pki=pki) as daemon:
        context = tls_client_context(daemon, pki.client_pem('good'))
        raw = connect_from(daemon, '127.0.0.1', 'tls')
        time.sleep(1.5)  # the slow link under test
        with context.wrap_socket(raw) as sock:
            sock.sendall(frame('app', 'web', 'over a slow link'))
            lines = daemon.wait_for_lines('app/web.log', 1)
        stats = daemon.stats()
    assert bodies(lines) == ['over a slow link']
    assert stats['tls_failures'] == 0


def test_a_stalled_handshake_is_cut_at_tls_handshake_timeout(tmp_path, pki):
    with Loghogd(tmp_path, FACILITIES, pki=pki, config={'server': {'tls_handshake_timeout': '1'}}) as daemon:
        stalled = connect_from(daemon, '127.0.0.2', 'tls')
        assert closed_by_server(stalled)
        output = daemon.wait_for_output('(tls_handshake_timeout)')
        stalled.close()
    assert 'TLS handshake with 127.0.0.2:' in output


def test_stalled_handshakes_filling_every_slot_give_way_to_a_new_client(tmp_path, pki):
    config = {'server': {'max_connections': '16'}}
    with Loghogd(tmp_path, FACILITIES, pki=pki, config=config) as daemon:
        stalled = [connect_from(daemon, '127.3.0.%d' % (number + 1), 'tls') for number in range(16)]
        wait_for(lambda: daemon.stats()['connections_open'] == 16, 10, 'every slot in a handshake')
        with daemon.connect_tls(pki.client_pem('good')) as sock:
            sock.sendall(frame('app', 'web', 'got in'))
            lines = daemon.wait_for_lines('app/web.log', 1)
        output = daemon.output()
        assert closed_by_server(stalled[0])
        for sock in stalled:
            sock.close()
    assert bodies(lines) == ['got in']
    assert 'TLS handshake with 127.3.0.1:' in output and 'oldest unfinished handshake is dropped' in output


# TLS sessions ------------------------------------------------------------------------------

@pytest.mark.parametrize('version', [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_no_tls_session_is_resumed(tmp_path, pki, version):
    """A resumed session would skip the client certificate and CRL check: every connection is a full handshake."""
    with Loghogd(tmp_path, FACILITIES, pki=pki) as daemon:
        context = tls_client_context(daemon, pki.client_pem('good'))
        context.maximum_version = version
        with context.wrap_socket(connect_from(daemon, '127.0.0.1', 'tls')) as first:
            first.sendall(frame('app', 'web', 'first'))
            daemon.wait_for_lines('app/web.log', 1)
            session = first.session
        with context.wrap_socket(connect_from(daemon, '127.0.0.1', 'tls'), session=session) as second:
            second.sendall(frame('app', 'web', 'second'))
            daemon.wait_for_lines('app/web.log', 2)
            assert not second.session_reused
        assert not session.has_ticket


# inflated bytes ----------------------------------------------------------------------------

def test_compressed_frames_over_the_inflate_budget_wait_and_all_land(tmp_path):
    """256 KiB per second: 8 frames of 200 KiB, sent at once, land whole, paced by the budget."""
    config = {'server': {'max_inflated_bytes_per_second': '256K'}}
    records = ['%d ' % i + 'z' * (200 * 1024) for i in range(8)]
    plain = [frame('app', 'big', body) for body in records]
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        with connect_from(daemon, '127.0.0.2') as sock:
            sock.sendall(b''.join(compress(one) for one in plain))
            lines = daemon.wait_for_lines('app/big.log', len(records), timeout=30)
        stats = daemon.stats()
        output = daemon.output()
    assert bodies(lines) == records
    assert stats['inflate_limited'] >= 1
    assert stats['inflated_bytes'] == sum(len(one) - HEADER.size for one in plain)
    assert 'slowing down 127.0.0.2:' in output and '(max_inflated_bytes_per_second)' in output


def test_compressed_datagrams_over_the_inflate_budget_are_dropped_and_counted(tmp_path):
    config = {'server': {'max_inflated_bytes_per_second': '256K', 'max_message_size': '256K'}}
    body = 'u' * (200 * 1024)
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(5):
                sock.sendto(compressed_frame(body), ('127.0.0.1', daemon.ports['udp']))
        stats = wait_for(lambda: (lambda s: s if s['frames_received'] == 5 else None)(daemon.stats()), 10,
                         'five datagrams read')
        lines = daemon.read_lines('app/big.log')
    assert stats['rejected_by_reason'].get('inflate_rate', 0) >= 1
    assert len(lines) + stats['rejected_by_reason']['inflate_rate'] == 5
    assert stats['inflate_limited'] == stats['rejected_by_reason']['inflate_rate']


def test_at_stop_frames_over_the_inflate_budget_are_counted_not_inflated(tmp_path):
    config = {'server': {'max_inflated_bytes_per_second': '256K'}}
    sent = 40
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        with connect_from(daemon, '127.0.0.2') as sock:
            sock.sendall(compressed_frame('b' * (900 * 1024)) * sent)
            wait_for(lambda: daemon.stats()['inflate_limited'] >= 1, 10, 'the sender slowed down')
            assert daemon.stop() == 0
        output = daemon.output()
        written = daemon.read_lines('app/big.log')
    dropped = re.search(r'dropped (\d+) compressed frames from 127\.0\.0\.2:\d+ at stop', output)
    assert dropped, output[-2000:]
    assert len(written) + int(dropped.group(1)) == sent


def test_frames_that_fail_to_inflate_are_charged_to_the_budget_too(tmp_path):
    """A zip bomb is refused at max_message_size, but it took inflating that much: 12 bombs of 64 KiB against a
    256 KiB budget cannot all be inflated at once, and are all refused in the end."""
    config = {'server': {'max_inflated_bytes_per_second': '256K', 'max_message_size': '64K'}}
    bomb = encode_frame(zlib.compress(b'0' * (10 * 1024 * 1024), 9), FLAG_ZLIB)
    assert len(bomb) < 64 * 1024
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        with connect_from(daemon, '127.0.0.2') as sock:
            sock.sendall(bomb * 12)
            stats = wait_for(lambda: (lambda s: s if s['rejected_by_reason'].get('oversized') == 12 else None)(
                daemon.stats()), 20, 'twelve bombs refused')
    assert stats['inflate_limited'] >= 1
    assert stats['inflated_bytes'] == 0


def test_a_good_client_is_not_slowed_by_another_address_inflating(tmp_path):
    config = {'server': {'max_inflated_bytes_per_second': '256K'}}
    with Loghogd(tmp_path, FACILITIES, config=config) as daemon:
        bomber = connect_from(daemon, '127.0.0.2')
        bomb = compressed_frame('b' * (900 * 1024))
        sender = threading.Thread(target=lambda: bomber.sendall(bomb * 40), daemon=True)
        sender.start()
        wait_for(lambda: daemon.stats()['inflate_limited'] >= 1, 10, 'the bomber slowed down')
        with connect_from(daemon, '127.0.0.3') as good:
            good.sendall(b''.join(compressed_frame('good %d' % i, 'web') for i in range(50)))
            lines = daemon.wait_for_lines('app/web.log', 50, timeout=10)
        bomber.close()
    assert bodies(lines) == ['good %d' % i for i in range(50)]
