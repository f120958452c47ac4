"""Acknowledged delivery (protocol 1.1) against a real loghogd."""

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
"""


def acked_frames(first, last, client_id='client-1', app_id='app'):
    return b''.join(frame(app_id, 'root', 'record %d' % seq, client_id=client_id, seq=seq)
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
