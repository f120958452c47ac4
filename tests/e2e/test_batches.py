"""Protocol 1.2 against a real loghogd: negotiation, batches from our client, and older clients unchanged."""

import json
import signal
import subprocess
import threading
import time

import pytest

from loghog.batch import FLAG_CAPS, decode_caps_ack, encode_batch
from loghog.protocol import FLAG_ACK, StreamDecoder, decode_ack
from loghogd.batchdecode import DECODER_NAME
from loghogd.inflating import INFLATER_NAME
from tests.e2e.test_client import LINE, free_port, on_port
from tests.support.daemon import LOGHOGD, Loghogd, facilities_conf, frame, wait_for
from tests.test_handler import logger_for

FACILITIES = facilities_conf({'demo': {}, 'signed': {'secret': 'sekrit'}})


@pytest.fixture
def daemon(tmp_path):
    with Loghogd(tmp_path, FACILITIES) as running:
        yield running


def server_frames(sock, wanted_seq, timeout=10.0):
    """Every frame the server sends until an ACK covers `wanted_seq`: [(flags, seq, capabilities or None)]."""
    decoder = StreamDecoder(max_size=4096, allowed_flags=FLAG_ACK | FLAG_CAPS)
    seen = []
    sock.settimeout(timeout)
    while not seen or seen[-1][1] < wanted_seq:
        data = sock.recv(4096)
        assert data, 'the server closed the connection'
        for flags, payload in decoder.feed(data):
            if flags & FLAG_CAPS:
                seen.append((flags, *decode_caps_ack(payload)))
            else:
                seen.append((flags, decode_ack(payload), None))
    assert decoder.error is None
    return seen


def log_numbered(handler, count, first_alone=True):
    logger = logger_for(handler)
    for number in range(count):
        logger.info('n %d', number)
        if number == 0 and first_alone:  # the first ACK brings the capabilities; batches follow
            wait_for(lambda: handler.queued == 0, 10, 'the first acknowledgement')


def test_a_11_client_gets_plain_acks_and_a_client_asking_gets_capabilities_once(daemon):
    with daemon.connect_tcp() as sock:
        sock.sendall(b''.join(frame('demo', 'root', 'old %d' % seq, client_id='old-1', seq=seq)
                              for seq in range(1, 201)))
        assert all(flags == FLAG_ACK and caps is None for flags, _seq, caps in server_frames(sock, 200))
    with daemon.connect_tcp() as sock:
        sock.sendall(frame('demo', 'root', 'asking', client_id='new-1', seq=1, caps='batch'))
        [(flags, seq, caps)] = server_frames(sock, 1)
        assert (flags, seq) == (FLAG_ACK | FLAG_CAPS, 1)
        assert caps == {'batch': 1, 'max_message_size': 1048576, 'max_batch_records': 10000}
        sock.sendall(frame('demo', 'root', 'asking again', client_id='new-1', seq=2, caps='batch'))
        assert server_frames(sock, 2) == [(FLAG_ACK, 2, None)]


def test_our_client_sends_batches_whose_lines_look_like_version_1_lines(daemon, make_handler):
    batched = make_handler('demo', '127.0.0.1', daemon.ports['tcp'], hostname='web1')
    log_numbered(batched, 2000)
    batched.close()
    plain = make_handler('demo', '127.0.0.1', daemon.ports['tcp'], hostname='web1', acknowledged=False)
    logger_for(plain).info('n 2000')
    plain.close()
    lines = daemon.wait_for_lines('demo/root.log', 2001)
    matches = [LINE.match(line) for line in lines]
    assert [m.group('body') for m in matches] == ['n %d' % n for n in range(2001)]
    assert {m.group('host') for m in matches} == {'web1'}
    stats = daemon.stats()
    assert 0 < stats['batches_received'] < 500 and stats['duplicates_dropped'] == 0


@pytest.mark.parametrize('secret, compression', [('sekrit', False), ('sekrit', True), (None, True)])
def test_signed_and_compressed_batches_land(daemon, make_handler, secret, compression):
    app = 'signed' if secret else 'demo'
    handler = make_handler(app, '127.0.0.1', daemon.ports['tcp'], secret=secret, compression=compression)
    log_numbered(handler, 500)
    handler.close()
    lines = daemon.wait_for_lines('%s/root.log' % app, 500)
    assert [LINE.match(line).group('body') for line in lines] == ['n %d' % n for n in range(500)]
    assert daemon.stats()['batches_received'] > 0


def test_a_batch_with_a_wrong_secret_is_rejected_whole_and_counted_per_record(daemon, make_handler):
    handler = make_handler('signed', '127.0.0.1', daemon.ports['tcp'], secret='wrong')
    log_numbered(handler, 300)
    wait_for(lambda: handler.queued == 0, 10, 'every record acknowledged (as handled)')
    stats = daemon.stats()
    assert stats['rejected_by_reason'] == {'bad_signature': 300} and stats['batches_received'] > 0
    assert daemon.read_lines('signed/root.log') == []


def test_batches_arrive_exactly_once_across_a_kill_and_a_restart(tmp_path, make_handler):
    port = free_port()
    daemon = Loghogd(tmp_path, FACILITIES, config=on_port(port)).start()
    handler = make_handler('demo', '127.0.0.1', port, flush_timeout=30.0)
    logger = logger_for(handler)
    total = 20000
    done = threading.Event()

    def produce() -> None:
        for number in range(total):
            logger.info('n %d', number)
            if number % 10 == 0:
                time.sleep(0.002)  # 4 s at least, so that the kill comes mid-stream
        done.set()
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: daemon.stats()['batches_received'] > 0 and len(daemon.read_lines('demo/root.log'))
                 > total // 4, 30, 'a quarter of the stream, in batches')
        daemon.stop(signal.SIGKILL)
        assert not done.is_set()
        daemon.start()
        producer.join(60)
        handler.close()
        wait_for(lambda: len(daemon.read_lines('demo/root.log')) >= total, 30, 'every record')
        numbers = [int(LINE.match(line).group('body').split()[1]) for line in daemon.read_lines('demo/root.log')]
        batches_after_restart = daemon.stats()['batches_received']
    finally:
        daemon.stop()
    assert sorted(numbers) == list(range(total)) and handler.dropped_total == 0
    assert batches_after_restart > 0


def test_status_names_the_batch_decoder_and_the_inflater(daemon):
    """The daemon runs from the suite's venv, so it uses the libraries this process finds."""
    status = subprocess.run([LOGHOGD, '--status', '-c', daemon.config_path], capture_output=True, text=True,
                            timeout=30, check=True).stdout
    assert 'protocol 1.2 batches decoded with %s, zlib inflated with %s\n' % (DECODER_NAME, INFLATER_NAME) in status
    as_json = json.loads(subprocess.run([LOGHOGD, '--status', '--json', '-c', daemon.config_path],
                                        capture_output=True, text=True, timeout=30, check=True).stdout)
    assert (as_json['batch_decoder'], as_json['inflater']) == (DECODER_NAME, INFLATER_NAME)


def test_a_batch_over_udp_lands(daemon):
    time_us = int(time.time() * 1e6)
    daemon.send_udp(encode_batch('demo', 'web1', None, None, [('root', time_us, 'udp %d' % n) for n in range(20)]))
    lines = daemon.wait_for_lines('demo/root.log', 20)
    assert [LINE.match(line).group('body') for line in lines] == ['udp %d' % n for n in range(20)]
    assert daemon.stats()['batches_received'] == 1
