"""The test cluster itself: three JetStream nodes keep a 3-replica stream through a node's SIGKILL."""

import pytest

from tests.support.natscluster import NatsCluster, require_nats

pytestmark = pytest.mark.slow

def test_a_replicated_stream_survives_a_killed_node(tmp_path):
    require_nats()
    with NatsCluster(tmp_path) as cluster:
        cluster.add_stream('T', ['t.>'], replicas=3)

        async def publish(js):
            ack = await js.publish('t.a', b'one', headers={'Nats-Msg-Id': 'one'})
            return ack.seq
        assert cluster.run(publish) == 1
        cluster.kill(0)

        async def publish_again(js):
            first = await js.publish('t.a', b'one', headers={'Nats-Msg-Id': 'one'})
            second = await js.publish('t.a', b'two', headers={'Nats-Msg-Id': 'two'})
            return first.duplicate, second.seq
        assert cluster.run(publish_again) == (True, 2)
        cluster.start(0)
        assert cluster.stream_messages('T') == 2
