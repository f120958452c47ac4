"""Acknowledged delivery (protocol 1.1) against a real loghogd."""

import os
import socket

import pytest

from loghog.protocol import FLAG_ACK, StreamDecoder, decode_ack
from tests.support.daemon import Loghogd, frame, wait_for

FACILITIES = """
[app]
rotate = daily
backup_count = 3

[synced]
rotate = daily
backup_count = 3
sync = yes

[signed]
rotate = daily
backup_count = 3
secret = sekrit
"""


def acked_frames(first, last, client_id='client-1', app_id='app', **options):
    return b''.join(frame(app_id, 'root', 'record %d' % seq, client_id=client_id, seq=seq, **options)
                    for seq in range(first, last + 1))


def read_acks_until(sock, wanted, timeout=10.0):
    """Read ACK frames until one covers `wanted`; return every acknowledged seq seen."""
    decoder = StreamDecoder(allowed_flags=FLAG_ACK)
    seen = []
    sock.settimeout(timeout)
    while not seen or seen[-1] < wanted:
        data = sock.recv(4096)
        assert data, 'the server closed the connection before acknowledging %d' % wanted
        for flags, payload in decoder.feed(data):
            assert flags == FLAG_ACK
            seen.append(decode_ack(payload))
    assert decoder.error is None
    return seen


@pytest.fixture
def daemon(tmp_path):
    with Loghogd(tmp_path, FACILITIES) as running:
        yield running


def body_count(daemon, relative='app/root.log'):
    return sorted(int(line.rsplit(' ', 1)[1]) for line in daemon.read_lines(relative))


def test_records_are_acknowledged_once_written(daemon):
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(1, 500))
        acks = read_acks_until(sock, 500)
    assert acks == sorted(acks) and acks[-1] == 500
    assert body_count(daemon) == list(range(1, 501))
    stats = daemon.stats()
    assert stats['acks_sent'] == len(acks)
    assert stats['ack_high_water'] == {'client-1': 500}


def test_resent_records_are_dropped_and_acknowledged_again_across_reconnect_and_restart(daemon):
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(1, 100))
        read_acks_until(sock, 100)
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(50, 120))
        assert read_acks_until(sock, 120)[-1] == 120
    assert daemon.stats()['duplicates_dropped'] == 51
    assert daemon.stop() == 0
    daemon.start()
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(1, 120))
        assert read_acks_until(sock, 120) == [120]
    assert body_count(daemon) == list(range(1, 121))
    assert daemon.stats()['duplicates_dropped'] == 120


def test_rejected_records_are_acknowledged_too(daemon):
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(1, 3, app_id='nosuchapp') + acked_frames(4, 5))
        assert read_acks_until(sock, 5)[-1] == 5
    assert body_count(daemon) == [4, 5]
    assert daemon.stats()['rejected_by_reason'] == {'unknown_app': 3}


def test_sync_facility_is_acknowledged(daemon):
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(1, 50, app_id='synced'))
        read_acks_until(sock, 50)
    assert body_count(daemon, 'synced/root.log') == list(range(1, 51))


def test_a_version_1_client_receives_no_byte_beside_an_acknowledged_one(daemon):
    plain = daemon.connect_tcp()
    plain.sendall(frame('app', 'root', 'plain 1'))
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(1, 200))
        read_acks_until(sock, 200)
    plain.sendall(frame('app', 'root', 'plain 2'))
    wait_for(lambda: daemon.stats()['accepted'] == 202, what='202 records')
    plain.settimeout(1.0)
    with pytest.raises(socket.timeout):
        plain.recv(1)
    plain.close()


def test_ack_request_over_udp_is_written_without_acknowledgement(daemon):
    daemon.send_udp(acked_frames(1, 1))
    wait_for(lambda: body_count(daemon) == [1], what='the UDP record')
    assert daemon.stats()['acks_sent'] == 0


def test_invalid_client_id_is_rejected(daemon):
    daemon.send_tcp(frame('app', 'root', 'x', client_id='../bad id', seq=1))
    wait_for(lambda: daemon.stats()['rejected_by_reason'].get('bad_ack_fields') == 1, what='the rejection')
    assert daemon.read_lines('app/root.log') == []


def test_a_rejected_last_record_is_acknowledged_to_its_sender_but_not_remembered(daemon):
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(1, 3) + acked_frames(4, 5, app_id='nosuchapp'))
        assert read_acks_until(sock, 5)[-1] == 5
    with daemon.connect_tcp() as sock:
        sock.sendall(acked_frames(4, 5))
        assert read_acks_until(sock, 5)[-1] == 5
    assert body_count(daemon) == [1, 2, 3, 4, 5]
    assert daemon.stats()['duplicates_dropped'] == 0


def test_forged_frames_cannot_move_a_signed_clients_mark(daemon):
    """A forger knows a real client id: its frames are refused and acknowledged to the forger alone."""
    real = daemon.connect_tcp()
    real.sendall(acked_frames(1, 5, client_id='real', app_id='signed', secret='sekrit'))
    assert read_acks_until(real, 5)[-1] == 5
    with daemon.connect_tcp() as forger:
        forger.sendall(acked_frames(2 ** 62, 2 ** 62, client_id='real', app_id='signed', secret='guess'))
        assert read_acks_until(forger, 2 ** 62)[-1] == 2 ** 62
        forger.sendall(acked_frames(2 ** 62, 2 ** 62, client_id='real', app_id='app'))
        forger.sendall(acked_frames(1, 1, client_id='real', app_id='app'))
        wait_for(lambda: daemon.stats()['rejected_by_reason'].get('client_id_taken') == 2, what='2 refusals')
    real.sendall(acked_frames(6, 10, client_id='real', app_id='signed', secret='sekrit'))
    assert read_acks_until(real, 10)[-1] == 10
    real.close()
    assert body_count(daemon, 'signed/root.log') == list(range(1, 11))
    assert daemon.read_lines('app/root.log') == []
    stats = daemon.stats()
    assert stats['duplicates_dropped'] == 0
    assert stats['rejected_by_reason'] == {'bad_signature': 1, 'client_id_taken': 2}
    assert stats['ack_high_water'] == {'real': 10}


def test_rejected_client_ids_take_no_room_and_status_stays_bounded(daemon):
    with daemon.connect_tcp() as sock:
        sock.sendall(b''.join(acked_frames(7, 7, client_id='junk-%d' % number, app_id='nosuchapp')
                              for number in range(3000)))
        sock.sendall(b''.join(acked_frames(1, 1, client_id='good-%d' % number) for number in range(50)))
        wait_for(lambda: daemon.stats()['accepted'] == 50, what='50 records')
    stats = daemon.stats()
    assert stats['rejected_by_reason'] == {'unknown_app': 3000}
    assert (stats['ack_clients'], stats['ack_clients_by_app']) == (50, {'app': 50})
    assert len(stats['ack_high_water']) == 20
    assert os.path.getsize(os.path.join(daemon.rundir, 'loghogd.stats.json')) < 8192


def test_a_full_client_id_table_evicts_counts_and_names_the_peer(tmp_path):
    with Loghogd(tmp_path, FACILITIES, config={'server': {'max_ack_clients': '20'}}) as daemon:
        with daemon.connect_tcp() as sock:
            sock.sendall(acked_frames(1, 1, client_id='signed-1', app_id='signed', secret='sekrit'))
            sock.sendall(b''.join(acked_frames(1, 1, client_id='flood-%d' % number) for number in range(100)))
            wait_for(lambda: daemon.stats()['accepted'] == 101, what='101 records')
        stats = daemon.stats()
        assert stats['ack_clients'] <= 20 and stats['ack_clients_by_app']['signed'] == 1
        assert stats['ack_clients_evicted'] == 100 - stats['ack_clients_by_app']['app']
        daemon.wait_for_output('client id from 127.0.0.1:')
