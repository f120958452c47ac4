"""Forwarding through JetStream and writing from it, with real nats-server and loghogd processes.

An edge loghogd (`write = no`, `forward = yes`) takes records from clients
and publishes them; a writer loghogd consumes the stream and writes the
files. A single JetStream node is enough here; the replicated cluster and
its failures are in test_scale_out.py.
"""

import re
import socket
import subprocess

import pytest

from loghogd.streamrecord import decode_record
from tests.e2e.test_acks import acked_frames, read_acks_until
from tests.support.daemon import LOGHOGD, Loghogd, bodies, frame, wait_for
from tests.support.natscluster import NatsCluster, require_nats

EDGE_FACILITIES = """
[app]
rotate = daily
backup_count = 3
write = no
forward = yes
"""
WRITER_FACILITIES = """
[app]
rotate = daily
backup_count = 3
"""


@pytest.fixture
def cluster(tmp_path):
    require_nats()
    with NatsCluster(tmp_path / 'nats', size=1) as running:
        yield running


def edge(directory, cluster, **forward):
    directory.mkdir(exist_ok=True)
    return Loghogd(directory, EDGE_FACILITIES,
                   config={'forward': {'nats_servers': ','.join(cluster.urls), **forward}})


def writer(directory, cluster, **consume):
    directory.mkdir(exist_ok=True)
    return Loghogd(directory, WRITER_FACILITIES,
                   config={'consume': {'nats_servers': ','.join(cluster.urls), 'durable': 'writer', **consume},
                           'stats': {'prometheus_textfile': str(directory / 'loghogd.prom')}})


def status_number(daemon, label):
    status = subprocess.run([LOGHOGD, '--status', '-c', daemon.config_path], capture_output=True, text=True,
                            timeout=30, check=True).stdout
    match = re.search(r'^%s +([0-9]+)$' % re.escape(label), status, re.M)
    assert match, status
    return int(match.group(1))


def test_records_flow_from_edge_through_the_stream_to_the_writer(tmp_path, cluster):
    cluster.add_stream('LOGHOG', ['loghog.>'], replicas=1)
    with edge(tmp_path / 'edge', cluster) as sender, writer(tmp_path / 'writer', cluster) as receiver:
        with sender.connect_tcp() as sock:
            sock.sendall(acked_frames(1, 300))
            assert read_acks_until(sock, 300)[-1] == 300
        sender.send_tcp(frame('app', 'root', 'a version 1 record') * 2)  # the same bytes twice: two records
        lines = receiver.wait_for_lines('app/root.log', 302)
        assert sorted(bodies(lines)) == sorted(['record %d' % n for n in range(1, 301)] + ['a version 1 record'] * 2)
        assert not (tmp_path / 'edge' / 'log' / 'app').exists()
        wait_for(lambda: receiver.stats()['consume_acked'] == 302, what='the writer to acknowledge every message')
        edge_stats = sender.stats()
        assert edge_stats['forward_acked'] == 302 and edge_stats['forward_pending_bytes'] == 0
        assert edge_stats['accepted_by_facility'] == {'app:root': 302}
        assert status_number(sender, 'forwarded: acknowledged by JetStream') == 302
        assert status_number(receiver, 'consumed: acknowledged') == 302
        wait_for(lambda: 'loghogd_consume_acked_total 302\n' in (tmp_path / 'writer' / 'loghogd.prom').read_text(),
                 what='the Prometheus file to count the acknowledged messages')
    assert cluster.stream_messages('LOGHOG') == 302


def test_records_wait_on_disk_while_the_stream_is_unreachable_then_flow_in_order(tmp_path, cluster):
    cluster.add_stream('LOGHOG', ['loghog.>'], replicas=1)
    cluster.nodes[0].stop()
    with edge(tmp_path / 'edge', cluster) as sender:
        with sender.connect_tcp() as sock:
            sock.sendall(acked_frames(1, 200))
            wait_for(lambda: sender.stats()['forward_pending_bytes'] > 0, what='records queued on disk')
            sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                sock.recv(1)  # nothing is acknowledged while JetStream has not the records
            cluster.start(0)
            assert read_acks_until(sock, 200, timeout=30)[-1] == 200
    with writer(tmp_path / 'writer', cluster) as receiver:
        lines = receiver.wait_for_lines('app/root.log', 200, timeout=30)
        assert bodies(lines) == ['record %d' % n for n in range(1, 201)]


def test_a_writer_killed_mid_stream_writes_every_record_once(tmp_path, cluster):
    cluster.add_stream('LOGHOG', ['loghog.>'], replicas=1)
    with edge(tmp_path / 'edge', cluster) as sender:
        with sender.connect_tcp() as sock:
            sock.sendall(acked_frames(1, 5000))
            read_acks_until(sock, 5000, timeout=60)
        receiver = writer(tmp_path / 'writer', cluster).start()
        wait_for(lambda: len(receiver.read_lines('app/root.log')) > 100, what='the writer to start writing')
        receiver.kill()
        receiver.start()
        lines = receiver.wait_for_lines('app/root.log', 5000, timeout=60)
        wait_for(lambda: receiver.stats()['consume_pending'] == 0, what='every message acknowledged')
        receiver.stop()
    assert sorted(bodies(lines)) == sorted('record %d' % n for n in range(1, 5001))


def test_a_forwarding_facility_needs_a_forward_section(tmp_path):
    daemon = Loghogd(tmp_path, EDGE_FACILITIES)
    with pytest.raises(AssertionError, match='has forward = yes, but .* has no \\[forward\\] section'):
        daemon.start()


def test_an_edge_killed_while_the_stream_is_down_forwards_its_queue_once_after_restart(tmp_path, cluster):
    cluster.add_stream('LOGHOG', ['loghog.>'], replicas=1)
    cluster.nodes[0].stop()
    sender = edge(tmp_path / 'edge', cluster).start()
    try:
        with sender.connect_tcp() as sock:
            sock.sendall(acked_frames(1, 100) + b''.join(frame('app', 'root', 'plain %d' % n) for n in range(50)))
            wait_for(lambda: sender.stats()['accepted'] == 150, what='records queued on disk')
        sender.kill()
        sender.start()
        with sender.connect_tcp() as sock:
            sock.sendall(acked_frames(1, 100))  # the client resends what was not acknowledged
            wait_for(lambda: sender.stats()['duplicates_dropped'] == 100, what='the resent records dropped')
            sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                sock.recv(1)  # in the queue, not yet in the stream: not acknowledged
            cluster.start(0)
            assert read_acks_until(sock, 100, timeout=30)[-1] == 100
        with writer(tmp_path / 'writer', cluster) as receiver:
            lines = receiver.wait_for_lines('app/root.log', 150, timeout=30)
            wait_for(lambda: receiver.stats()['consume_pending'] == 0, what='every message acknowledged')
            assert len(receiver.read_lines('app/root.log')) == 150
    finally:
        sender.stop()
    assert sorted(bodies(lines)) == sorted(['record %d' % n for n in range(1, 101)] + ['plain %d' % n for n in range(50)])


def test_syslog_messages_are_forwarded_with_their_syslog_fields(tmp_path, cluster):
    cluster.add_stream('LOGHOG', ['loghog.>'], replicas=1)
    sender = edge(tmp_path / 'edge', cluster)
    sender.write_config({'forward': {'nats_servers': ','.join(cluster.urls)},
                         'server': {'listen_ipv4_syslog': '127.0.0.1:0'}})
    with sender, writer(tmp_path / 'writer', cluster) as receiver:
        with socket.create_connection(('127.0.0.1', sender.ports['syslog-tcp'])) as sock:
            sock.sendall(b'<11>1 2026-12-01T12:00:00Z web3 app 42 - - over syslog\n')
        lines = receiver.wait_for_lines('app/root.log', 1, timeout=30)
        assert bodies(lines, host='web3') == ['over syslog']

    async def first_message(js):
        subscription = await js.pull_subscribe('loghog.app.root', durable='check', stream='LOGHOG')
        [message] = await subscription.fetch(1, timeout=5)
        return message.data
    record = decode_record(cluster.run(first_message))
    assert (record.syslog.severity, record.syslog.facility, record.pid, record.host) == (3, 1, 42, 'web3')
