"""Scale-out end to end: a client, two edges, a 3-node JetStream cluster and a writer, under SIGKILLs.

The client (acknowledged delivery, both edges in its server list) logs
50 000 numbered records at a steady pace. Meanwhile one NATS node, then
the edge the client is sending to, then the writer are killed with SIGKILL
and restarted at once. Afterwards every number is in the writer's file
exactly once: the edge acknowledges only what JetStream has, JetStream
drops what is published twice (message id = client id + seq), and the
writer acknowledges to JetStream only what its journal has on disk.
"""

import collections
import logging
import threading
import time

import pytest

from loghog import LoghogHandler
from tests.e2e.test_client import free_port, on_port
from tests.support.daemon import Loghogd, bodies, wait_for
from tests.support.natscluster import NatsCluster, require_nats

pytestmark = pytest.mark.slow

EDGE_FACILITIES = """
[demo]
rotate = daily
backup_count = 1
write = no
forward = yes
"""
WRITER_FACILITIES = """
[demo]
rotate = size
max_size = 10G
backup_count = 1
"""
TOTAL = 50000
RATE = 2000.0
"""Slow enough that every kill and restart happens while the client still sends."""
BODY = 'record %d on its way through an edge, the stream and the writer'


def make_edge(directory, port, cluster):
    directory.mkdir()
    config = on_port(port)
    config['forward'] = {'nats_servers': ','.join(cluster.urls)}
    return Loghogd(directory, EDGE_FACILITIES, config=config)


def test_every_record_lands_once_through_node_edge_and_writer_kills(tmp_path):
    require_nats()
    with NatsCluster(tmp_path / 'nats') as cluster:
        cluster.add_stream('LOGHOG', ['loghog.>'], replicas=3)
        ports = [free_port(), free_port()]
        edges = [make_edge(tmp_path / ('edge%d' % index), port, cluster) for index, port in enumerate(ports)]
        (tmp_path / 'writer').mkdir()
        writer = Loghogd(tmp_path / 'writer', WRITER_FACILITIES,
                         config={'consume': {'nats_servers': ','.join(cluster.urls), 'durable': 'writer'}})
        for daemon in edges + [writer]:
            daemon.start()
        handler = LoghogHandler('demo', servers=[('127.0.0.1', port) for port in ports], hostname='web1',
                                flush_timeout=180.0)
        logger = logging.getLogger('scale_out')
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
        produced = [0]
        events = []
        errors = []

        def kill_and_restart(at, what, kill, start):
            wait_for(lambda: produced[0] >= at, 120, 'record %d' % at, interval=0.005)
            began = time.monotonic()
            kill()
            start()
            events.append('%s killed at %d, back after %.1f s' % (what, at, time.monotonic() - began))

        def chaos():
            try:
                kill_and_restart(TOTAL // 10, 'nats-node', lambda: cluster.kill(0), lambda: cluster.start(0))
                kill_and_restart(TOTAL * 4 // 10, 'edge', edges[0].kill, edges[0].start)
                kill_and_restart(TOTAL * 7 // 10, 'writer', writer.kill, writer.start)
            except BaseException as error:
                errors.append(error)
        thread = threading.Thread(target=chaos, daemon=True)
        started = time.monotonic()
        try:
            thread.start()
            for number in range(TOTAL):
                ahead = started + number / RATE - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                logger.info(BODY, number)
                produced[0] = number + 1
            thread.join(300)
            assert not thread.is_alive() and not errors, errors
            handler.close()
            assert handler.dropped_total == 0
            lines = writer.wait_for_lines('demo/root.log', TOTAL, timeout=180)
            wait_for(lambda: writer.stats()['consume_pending'] == 0, 60, 'the writer to acknowledge all')
            stats = [daemon.stats() for daemon in edges + [writer]]
        finally:
            handler.flush_timeout = 0.0
            handler.close()
            for daemon in edges + [writer]:
                daemon.stop()
        counts = collections.Counter(int(body.split()[1]) for body in bodies(writer.read_lines('demo/root.log')))
        assert all('killed at' in event for event in events)
        print('\nscale-out: %s; %.1f s; edges forwarded %s, duplicates at JetStream %s; writer redelivered %d, '
              'dropped %d as duplicates' % ('; '.join(events), time.monotonic() - started,
                                            [s['forward_acked'] for s in stats[:2]],
                                            [s['forward_duplicates'] for s in stats[:2]],
                                            stats[2]['consume_redelivered'], stats[2]['consume_duplicates']))
        lost = [number for number in range(TOTAL) if number not in counts]
        duplicated = sorted(number for number, count in counts.items() if count > 1)
        assert not lost, 'lost %d, first %s' % (len(lost), lost[:10])
        assert not duplicated, 'duplicated %d, first %s' % (len(duplicated), duplicated[:10])
        assert len(lines) >= TOTAL
