"""LoghogHandler against raw capture sockets in this process (and the real 0.7 client in its venv).

The listeners here store bytes and, like loghogd, acknowledge the frames
that ask for it (protocol 1.1) and send nothing else; `acking=False` makes
one a version-1 server that never answers. Every assertion is about exactly
what the handler put on the wire. Tests that compare bytes with the 0.7
client pass `acknowledged=False`, the mode that sends exactly 0.7's bytes.
"""

import json
import logging
import logging.config
import os
import resource
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from typing import Dict, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loghog.sender
import loghog.transport
from loghog import LoghogHandler
from loghog.batch import BATCH_CLIENT_FLAGS, FLAG_BATCH, RECORD_FIELDS, encode_caps_ack, split_mac
from loghog.encoder import RecordEncoder
from loghog.outbox import Outbox
from loghog.protocol import (
    FLAG_ACK_REQUEST, FLAG_ZLIB, StreamDecoder, decode_datagram, encode_ack, encode_message, sign)
from tests.support.daemon import REPO, VENV07_PYTHON, wait_for

# Frames captured from the deployed 0.7 client (CLIENT-0.7.md): app demo, logger
# web.requests, hostname web1, message 'hello wörld ☃'.
CAPTURED_TCP = bytes.fromhex(
    '0000009a000000007b2276657273696f6e223a20312c20226170705f6964223a202264656d6f222c20226d6f64756c65'
    '223a20227765622e7265717565737473222c20227374616d70223a20313739353439363935342c20226e73656373223a'
    '203230393030303030302c2022686f73746e616d65223a202277656231222c2022626f6479223a202268656c6c6f2077'
    '5c7530306636726c64205c7532363033227d')  # stamp 1795496954, nsecs 209000000
CAPTURED_ZLIB = bytes.fromhex(
    '0000008000000001789c35ccd10a02211005d05f91798e7077d3b06f5908372776411d73b425a27f4f83e6ed9ecb9d37'
    '3c31f346112e623808b0295d37d702380c044d02b9eab1cb8ecb31e3a32217ee0d171b52df9d8d3a196d946a18196fdc'
    '719ce4ef9aadc425daf07f32f4f142eed5f38ade93d8e72ae55d67efc45c472d27f87c01c9ba2cdf')  # 1795496955.123
CAPTURED_SIGNED = bytes.fromhex(
    '000000c3000000007b2276657273696f6e223a20312c20226170705f6964223a202264656d6f222c20226d6f64756c65'
    '223a20227765622e7265717565737473222c20227374616d70223a20313739353439363935362c20226e73656373223a'
    '20302c2022686f73746e616d65223a202277656231222c2022626f6479223a202268656c6c6f20775c7530306636726c'
    '64205c7532363033222c20227369676e6174757265223a20223632636339303262623335393937646134353033353163'
    '663333356361313330227d')  # key 'sekrit', stamp 1795496956, nsecs 0
MESSAGE = 'hello wörld ☃'


class Capture:
    """A TCP (optionally TLS) or UDP listener on 127.0.0.1 that keeps every byte per connection.

    With `listening=False` the TCP socket is bound but refuses connections
    until listen() is called: a server that is down, on a port nobody else
    can take meanwhile.
    """

    def __init__(self, udp: bool = False, listening: bool = True,
                 tls: Optional[ssl.SSLContext] = None, greeting: bytes = b'', acking: bool = True,
                 caps: Optional[Dict[str, object]] = None, max_size: int = 1024 * 1024) -> None:
        self.udp = udp
        self.max_size = max_size  # a bigger frame closes the connection, as loghogd's max_message_size does
        self.caps = caps  # answer a connection asking for capabilities with these (a protocol 1.2 server)
        self.tls = tls
        self.greeting = greeting
        self.acking = acking
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.connections: List[bytearray] = []
        self.datagrams: List[bytes] = []
        self.peers: List[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        if listening:
            self.listen()

    def listen(self) -> None:
        target = self._read_datagrams if self.udp else self._accept
        if not self.udp:
            self.sock.listen(16)
        threading.Thread(target=target, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buffer = bytearray()
            with self._lock:
                self.connections.append(buffer)
            threading.Thread(target=self._read, args=(conn, buffer), daemon=True).start()

    def _read(self, conn: socket.socket, buffer: bytearray) -> None:
        try:
            if self.greeting:
                conn.sendall(self.greeting)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.peers.append(conn)
            decoder = StreamDecoder(self.max_size, BATCH_CLIENT_FLAGS)
            answered = False
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                with self._lock:
                    buffer += data
                records = [record for flags, payload in decoder.feed(data) if flags & FLAG_ACK_REQUEST
                           for record in decode(encode_message_bytes(flags, payload), True)]
                if records and self.acking:
                    seq = max(record['seq'] for record in records)
                    if not answered and self.caps is not None and records[0].get('caps') == 'batch':
                        conn.sendall(encode_caps_ack(seq, self.caps))
                    else:
                        conn.sendall(encode_ack(seq))
                    answered = True
                if decoder.error is not None:
                    break
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _read_datagrams(self) -> None:
        while not self._stopped:
            try:
                data = self.sock.recv(70000)
            except OSError:
                return
            with self._lock:
                self.datagrams.append(data)

    def frames(self) -> List[bytes]:
        """Every whole frame received, in order per connection, as raw bytes."""
        with self._lock:
            if self.udp:
                return list(self.datagrams)
            chunks = [bytes(buffer) for buffer in self.connections]
        frames = []
        for chunk in chunks:
            decoder = StreamDecoder(allowed_flags=BATCH_CLIENT_FLAGS)
            for flags, payload in decoder.feed(chunk):
                frames.append(encode_message_bytes(flags, payload))
        return frames

    def records(self) -> List[Dict[str, object]]:
        return [record for frame in self.frames() for record in decode(frame, True)]

    def bodies(self) -> List[str]:
        return [record['body'] for record in self.records()]

    def wait_for_records(self, count: int, timeout: float = 10.0) -> List[Dict[str, object]]:
        wait_for(lambda: len(self.frames()) >= count, timeout,
                 '%d records (have %d)' % (count, len(self.frames())))
        return self.records()

    def close(self) -> None:
        self._stopped = True
        self.sock.close()
        for peer in self.peers:
            peer.close()


def encode_message_bytes(flags: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, 'big') + flags.to_bytes(4, 'big') + payload


def decode(frame: bytes, batches: bool = False):
    """A version 1 frame's JSON object; with `batches`, a list of records, a batch's as objects too."""
    flags, payload = decode_datagram(frame, allowed_flags=BATCH_CLIENT_FLAGS)
    if flags & FLAG_ZLIB:
        payload = zlib.decompress(payload)
    if not batches:
        return json.loads(payload)
    if not flags & FLAG_BATCH:
        return [json.loads(payload)]
    data, _ = split_mac(payload, flags)
    app_id, hostname, client_id, first_seq, arrays = json.loads(data)[1:]
    return [dict(zip(RECORD_FIELDS, array), app_id=app_id, hostname=hostname, client_id=client_id,
                 seq=first_seq + index if first_seq else None, batch=True) for index, array in enumerate(arrays)]


@pytest.fixture
def capture():
    server = Capture()
    yield server
    server.close()


def make_record(created: float, message: str = MESSAGE, name: str = 'web.requests') -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
    record.created = created
    record.msecs = float(round((created % 1) * 1000))
    return record


def logger_for(handler: logging.Handler, name: str = 'web.requests') -> logging.Logger:
    logger = logging.getLogger('%s.%x' % (name, id(handler)))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def log_close_and_check(handler: LoghogHandler, capture: Capture, count: int) -> None:
    """Log `count` numbered records, close the handler, and find all of them, in order, at the capture."""
    logger = logger_for(handler)
    for i in range(count):
        logger.info('record %d', i)
    handler.close()
    capture.wait_for_records(count)
    assert capture.bodies() == ['record %d' % i for i in range(count)]


# API compatibility ----------------------------------------------------------

def test_constructor_takes_the_07_arguments_in_the_07_order():
    code = ('import inspect, json, loghog; print(json.dumps([[p.name, repr(p.default)] for p in '
            'list(inspect.signature(loghog.LoghogHandler.__init__).parameters.values())[1:]]))')
    legacy = json.loads(subprocess.run([VENV07_PYTHON, '-c', code], capture_output=True, text=True, check=True,
                                       timeout=60, cwd='/').stdout)
    import inspect
    ours = [[p.name, repr(p.default)] for p in inspect.signature(LoghogHandler.__init__).parameters.values()
            if p.kind == p.POSITIONAL_OR_KEYWORD][1:]
    # The one deliberate change: the queue is bounded in bytes, and in records only when asked.
    assert ours == [[name, 'None' if name == 'max_buffer_size' else default] for name, default in legacy]


def test_positional_arguments_land_where_07_put_them(capture, make_handler):
    handler = make_handler('demo', '127.0.0.1', capture.port, True, 'sekrit', False, 'web1', None, 7, False,
                           acknowledged=False)
    assert (handler.address, handler.use_stream, handler.secret, handler.hostname, handler.max_buffer_size) == \
        (('127.0.0.1', capture.port), True, 'sekrit', 'web1', 7)
    assert handler.servers == [('127.0.0.1', capture.port)]
    handler.handle(make_record(1795496956.0))
    handler.close()
    capture.wait_for_records(1)
    assert capture.frames() == [CAPTURED_SIGNED]


def test_dictconfig_builds_the_handler_like_django_logging(capture):
    logging.config.dictConfig({
        'version': 1,
        'disable_existing_loggers': False,
        'formatters': {'short': {'format': '%(levelname)s %(message)s'}},
        'handlers': {'loghog': {'class': 'loghog.LoghogHandler', 'app_name': 'demo', 'host': '127.0.0.1',
                                'port': capture.port, 'hostname': 'web1', 'secret': b'sekrit',
                                'formatter': 'short', 'level': 'INFO'}},
        'loggers': {'dictconfig.test': {'handlers': ['loghog'], 'level': 'DEBUG', 'propagate': False}},
    })
    logger = logging.getLogger('dictconfig.test')
    [handler] = logger.handlers
    assert isinstance(handler, LoghogHandler)
    logger.debug('filtered by the handler level')
    logger.warning('configured ☃')
    handler.close()
    logger.handlers = []
    [record] = capture.wait_for_records(1)
    assert (record['app_id'], record['module'], record['hostname'], record['body']) == \
        ('demo', 'dictconfig.test', 'web1', 'WARNING configured ☃')
    assert record['signature'] == sign('sekrit', 'demo', 'dictconfig.test', record['stamp'], record['nsecs'],
                                       'WARNING configured ☃')


# Bytes on the wire ------------------------------------------------------------

@pytest.mark.parametrize('created, options, captured', [
    (1795496954.209, {}, CAPTURED_TCP),
    (1795496955.123, {'compression': True}, CAPTURED_ZLIB),
    (1795496956.0, {'secret': 'sekrit'}, CAPTURED_SIGNED),
    (1795496956.0, {'secret': b'sekrit'}, CAPTURED_SIGNED),
])
def test_frames_are_byte_identical_to_the_captured_07_frames(capture, make_handler, created, options, captured):
    handler = make_handler('demo', '127.0.0.1', capture.port, hostname='web1', acknowledged=False, **options)
    handler.handle(make_record(created))
    handler.close()
    capture.wait_for_records(1)
    assert capture.frames() == [captured]


@settings(max_examples=300)
@given(app_id=st.text(), hostname=st.text(), module=st.text(), body=st.text(),
       stamp=st.integers(min_value=0, max_value=2**40), nsecs=st.integers(min_value=0, max_value=999999999),
       secret=st.none() | st.text(min_size=1) | st.binary(min_size=1), compress=st.booleans(),
       client_id=st.none() | st.from_regex(r'[A-Za-z0-9_-]{1,64}', fullmatch=True),
       seq=st.integers(min_value=1, max_value=2**63))
def test_record_encoder_matches_the_protocol_encoder(app_id, hostname, module, body, stamp, nsecs, secret,
                                                     compress, client_id, seq):
    encoder = RecordEncoder(app_id, hostname, secret, compress)
    seq = seq if client_id else None
    assert encoder.encode(module, stamp, nsecs, body, client_id, seq) == \
        encode_message(app_id, module, stamp, nsecs, hostname, body, secret, compress, client_id, seq)


def test_handler_frames_match_the_protocol_encoder_for_traceback_records(capture, make_handler):
    handler = make_handler('demo', '127.0.0.1', capture.port, hostname='web1', acknowledged=False)
    logger = logger_for(handler, 'web')
    try:
        raise ValueError('bad \U0001F600 value')
    except ValueError:
        logger.exception('failed:\nline two')
    handler.close()
    capture.wait_for_records(1)
    [frame] = capture.frames()
    record = decode(frame)
    assert record['body'].startswith('failed:\nline two\nTraceback (most recent call last):')
    assert frame == encode_message('demo', logger.name, record['stamp'], record['nsecs'], 'web1', record['body'])


LEGACY_SENDER = textwrap.dedent('''
    import logging, sys, loghog
    port, stream, options = int(sys.argv[1]), sys.argv[2] == 'tcp', eval(sys.argv[3])
    handler = loghog.LoghogHandler('demo', '127.0.0.1', port, stream, hostname='web1', **options)
    for created, message in ((1795496954.209, 'hello w\\u00f6rld \\u2603'), (1795496955.5, 'x' * 5000),
                             (1795496956.0, 'multi\\nline \\U0001F600')):
        record = logging.LogRecord('web.requests', logging.INFO, 'x', 1, message, None, None)
        record.created, record.msecs = created, float(round(created % 1 * 1000))
        handler.handle(record)
''')


@pytest.mark.parametrize('transport, options', [
    ('tcp', {}), ('udp', {}), ('tcp', {'compression': True}), ('udp', {'compression': True}),
    ('tcp', {'secret': 'sekrit'}),
])
def test_same_records_as_the_real_07_client(make_handler, transport, options):
    legacy = Capture(udp=transport == 'udp')
    ours = Capture(udp=transport == 'udp')
    try:
        subprocess.run([VENV07_PYTHON, '-c', LEGACY_SENDER, str(legacy.port), transport, repr(options)],
                       check=True, timeout=60, cwd='/')
        handler = make_handler('demo', '127.0.0.1', ours.port, transport == 'tcp', hostname='web1',
                               acknowledged=False, **options)
        for created, message in ((1795496954.209, MESSAGE), (1795496955.5, 'x' * 5000),
                                 (1795496956.0, 'multi\nline \U0001F600')):
            handler.handle(make_record(created, message))
        handler.close()
        expected = legacy.wait_for_records(3)
        received = ours.wait_for_records(3)
        for theirs, mine in zip(expected, received):
            assert list(mine) == list(theirs)
            for key in theirs:
                assert mine[key] == theirs[key], key
        assert ours.frames() == legacy.frames()
    finally:
        legacy.close()
        ours.close()


# Delivery -------------------------------------------------------------------

def test_a_socket_numbered_past_1024_still_delivers_and_reads_acks(capture, make_handler):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip('the hard open-file limit (%d) is too low to reach descriptor 1024' % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    fillers = []
    try:
        while not fillers or fillers[-1] < 1100:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        handler = make_handler('demo', '127.0.0.1', capture.port)
        log_close_and_check(handler, capture, 50)
        assert handler.dropped_total == 0
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_close_flushes_everything_queued(capture, make_handler):
    log_close_and_check(make_handler('demo', '127.0.0.1', capture.port), capture, 500)


def test_overflow_drops_the_oldest_counts_exactly_and_reports_once(make_handler, capsys):
    down = Capture(listening=False)
    try:
        handler = make_handler('demo', '127.0.0.1', down.port, max_buffer_size=10)
        logger = logger_for(handler)
        for i in range(25):
            logger.info('record %d', i)
        assert handler.dropped_total == 15
        assert handler.queued == 10
        down.listen()
        assert [r['body'] for r in down.wait_for_records(10)] == ['record %d' % i for i in range(15, 25)]
        wait_for(lambda: '15 record(s) were dropped' in capsys.readouterr().err, 5, 'the drop report')
        logger.info('after')
        down.wait_for_records(11)
        handler.close()
        assert 'dropped' not in capsys.readouterr().err
        assert handler.dropped_total == 15
    finally:
        down.close()


def test_records_logged_while_the_server_is_down_arrive_without_another_emit(make_handler):
    down = Capture(listening=False)
    try:
        handler = make_handler('demo', '127.0.0.1', down.port)
        logger = logger_for(handler)
        durations = []
        for i in range(1000):
            start = time.perf_counter()
            logger.info('record %d', i)
            durations.append(time.perf_counter() - start)
        time.sleep(0.3)  # let the sender fail and back off a few times before the server comes up
        down.listen()
        assert [r['body'] for r in down.wait_for_records(1000)] == ['record %d' % i for i in range(1000)]
        print('emit while the server is down: first (starts the sender) %.1f us, max of the rest %.1f us, '
              'median %.1f us' % (durations[0] * 1e6, max(durations[1:]) * 1e6, sorted(durations)[500] * 1e6))
        assert max(durations) < 0.5  # sanity bound only; the figure is printed above
    finally:
        down.close()


def test_a_server_closing_the_connection_loses_nothing_logged_after(capture, make_handler):
    """Version 1: the handler notices the closed connection before it sends the next record."""
    handler = make_handler('demo', '127.0.0.1', capture.port, acknowledged=False)
    logger = logger_for(handler)
    logger.info('first')
    capture.wait_for_records(1)
    wait_for(lambda: capture.peers, 5, 'the server side of the connection')
    capture.peers[0].shutdown(socket.SHUT_RDWR)
    time.sleep(0.1)  # the FIN reaches the client before the next record
    for i in range(5):
        logger.info('after %d', i)
    handler.close()
    capture.wait_for_records(6)
    assert capture.bodies() == ['first'] + ['after %d' % i for i in range(5)]
    assert len(capture.connections) == 2


def test_a_server_that_stops_reading_costs_records_not_time(make_handler):
    stalled = socket.socket()
    stalled.bind(('127.0.0.1', 0))
    stalled.listen(1)
    try:
        handler = make_handler('demo', '127.0.0.1', stalled.getsockname()[1], max_buffer_size=100)
        logger = logger_for(handler)
        started = time.monotonic()
        for i in range(3000):
            logger.info('%d %s', i, 'x' * 20000)  # 60 MB: far more than the socket buffers hold
        logging_time = time.monotonic() - started
        wait_for(lambda: handler.dropped_total > 0, 10, 'drops while the server is not reading')
        handler.flush_timeout = 0.5
        started = time.monotonic()
        handler.close()
        print('3000 records to a stalled server: %.3f s of logging calls, close() took %.2f s, %d dropped'
              % (logging_time, time.monotonic() - started, handler.dropped_total))
        assert handler.queued == 0
        assert handler.dropped_total >= 3000 - 100 - 8e6 // 20000  # at most the queue and the buffers got out
        assert time.monotonic() - started < 5  # close() is bounded by flush_timeout, not by the server
    finally:
        stalled.close()


@pytest.mark.parametrize('quick_reads', [True, False])
def test_a_send_to_a_server_that_stops_reading_fails_after_the_send_timeout(monkeypatch, quick_reads):
    """With the kernel's send timeout (Linux) as with Python's: the sender gets a SendError naming the last
    whole record written, and an ACK read never waits."""
    monkeypatch.setattr(loghog.transport, 'QUICK_READS', quick_reads and loghog.transport.QUICK_READS)
    stalled = socket.socket()
    stalled.bind(('127.0.0.1', 0))
    stalled.listen(1)
    try:
        connection = loghog.transport.connect_stream(stalled.getsockname(), 5.0, None)
        connection.set_send_timeout(0.5)
        assert connection.read_acks() == 0
        frames = [(seq, b'x' * 100000) for seq in range(1, 301)]  # 30 MB: far more than the buffers hold
        started = time.monotonic()
        with pytest.raises(loghog.transport.SendError) as failed:
            connection.send(frames)
        assert time.monotonic() - started < 30
        assert 0 < failed.value.last_sent < 300
        connection.close()
    finally:
        stalled.close()


def test_udp_sends_one_datagram_per_record_and_drops_oversized_ones(make_handler):
    server = Capture(udp=True)
    try:
        handler = make_handler('demo', '127.0.0.1', server.port, stream=False, max_buffer_size=5)
        logger = logger_for(handler)
        logger.info('small 1')
        logger.info('x' * 70000)
        logger.info('small 2')
        records = server.wait_for_records(2)
        handler.close()
        assert [r['body'] for r in records] == ['small 1', 'small 2']
        assert handler.dropped_total == 1
        assert all(len(datagram) == int.from_bytes(datagram[:4], 'big') + 8 for datagram in server.datagrams)
    finally:
        server.close()


SCRIPT_100 = textwrap.dedent('''
    import logging, sys
    sys.path.insert(0, {repo!r})
    from loghog import LoghogHandler
    logging.basicConfig(level=logging.INFO, format='%(message)s',
                        handlers=[LoghogHandler('demo', '127.0.0.1', int(sys.argv[1]))])
    for i in range(100):
        logging.info('record %d', i)
''')


def run_script_logging_100_records(port: int) -> None:
    """A separate Python that logs 'record 0'..'record 99' to 127.0.0.1:port and just exits."""
    subprocess.run([sys.executable, '-c', SCRIPT_100.format(repo=REPO), str(port)], check=True, timeout=60)


def test_a_script_that_logs_100_records_and_exits_delivers_all_100(capture):
    run_script_logging_100_records(capture.port)
    capture.wait_for_records(100)
    assert capture.bodies() == ['record %d' % i for i in range(100)]


def connected_logger(capture: Capture, make_handler, first_body: str):
    """A handler whose connection and sender thread exist: one record has arrived."""
    handler = make_handler('demo', '127.0.0.1', capture.port)
    logger = logger_for(handler)
    logger.info(first_body)
    capture.wait_for_records(1)
    return handler, logger


@pytest.mark.filterwarnings('ignore:This process .* is multi-threaded')  # the point: fork after threads
def test_a_forked_child_makes_its_own_connection_and_thread(capture, make_handler):
    handler, logger = connected_logger(capture, make_handler, 'parent before fork')
    parent_sender = handler._sender_done
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            for i in range(20):
                logger.info('child %d', i)
            own_thread = handler._sender_done is not None and handler._sender_done is not parent_sender
            handler.close()
            os.write(write_end, b'own thread' if own_thread else b'shared thread')
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, 'rb') as pipe:
        assert pipe.read() == b'own thread'
    assert status == 0
    logger.info('parent after fork')
    capture.wait_for_records(22)
    assert sorted(capture.bodies()) == sorted(['parent before fork', 'parent after fork']
                                              + ['child %d' % i for i in range(20)])
    assert len(capture.connections) == 2


def log_twenty_records(logger_name: str) -> None:
    for i in range(20):
        logging.getLogger(logger_name).info('worker %d', i)


@pytest.mark.filterwarnings('ignore:This process .* is multi-threaded')  # the point: fork after threads
def test_a_multiprocessing_child_delivers_its_records_before_it_exits(capture, make_handler):
    import multiprocessing
    _, logger = connected_logger(capture, make_handler, 'parent')
    child = multiprocessing.get_context('fork').Process(target=log_twenty_records, args=(logger.name,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    capture.wait_for_records(21)
    assert capture.bodies() == ['parent'] + ['worker %d' % i for i in range(20)]


def test_emit_never_raises_into_the_application(make_handler, capsys):
    handler = make_handler('demo', '127.0.0.1', 1)
    logger = logger_for(handler)
    logger.info('%d', 'not a number')  # formatting fails: handleError, not an exception
    assert 'Traceback' in capsys.readouterr().err
    handler.close()
    logger.info('after close is dropped and counted')
    assert handler.dropped_total >= 1


def test_bad_arguments_are_refused_with_a_message():
    with pytest.raises(ValueError, match='max_buffer_size'):
        LoghogHandler('demo', max_buffer_size=0)
    with pytest.raises(ValueError, match='stream=True'):
        LoghogHandler('demo', stream=False, ssl_info={'pemfile': 'x', 'cacert': 'y'})
    with pytest.raises(ValueError, match="'cacert'"):
        LoghogHandler('demo', ssl_info={'pemfile': 'x'})


# TLS ------------------------------------------------------------------------

@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    from tests.support.pki import make_pki
    return make_pki(tmp_path_factory.mktemp('pki'))


def server_context(pki, pem: Optional[str] = None) -> ssl.SSLContext:
    """A mutual-TLS server that still sends TLS 1.3 session tickets, which 0.7 stumbled on."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem or pki.server_pem)
    context.load_verify_locations(pki.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_record_types(data: bytes) -> List[int]:
    """The content type of each TLS record in `data`; asserts the data is nothing but whole records."""
    types, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 5, 'trailing bytes that are not a TLS record: %r' % data[pos:]
        types.append(data[pos])
        pos += 5 + int.from_bytes(data[pos + 3:pos + 5], 'big')
    assert pos == len(data), 'a TLS record is cut short'
    return types


@pytest.mark.parametrize('check_hostname', [False, True])
def test_tls_delivers_over_one_connection_despite_session_tickets(pki, make_handler, check_hostname):
    server = Capture(tls=server_context(pki))
    try:
        ssl_info = {'pemfile': pki.client_pem('web1'), 'cacert': pki.ca_cert, 'check_hostname': check_hostname}
        handler = make_handler('demo', '127.0.0.1', server.port, ssl_info=ssl_info, hostname='web1')
        logger = logger_for(handler)
        logger.info('before tickets')
        server.wait_for_records(1)
        time.sleep(0.2)  # the session tickets are in the client's socket by now
        for i in range(5):
            logger.info('after %d', i)
        server.wait_for_records(6)
        handler.close()
        assert server.bodies() == ['before tickets'] + ['after %d' % i for i in range(5)]
        assert len(server.connections) == 1
    finally:
        server.close()


@pytest.mark.parametrize('greeting', [b'', b'HTTP/1.1 400 Bad Request\r\n\r\n' * 4])
def test_a_failed_handshake_never_sends_a_byte_in_plaintext(pki, make_handler, monkeypatch, greeting):
    monkeypatch.setattr(loghog.sender, 'CONNECT_TIMEOUT', 0.3)
    listener = Capture(greeting=greeting)
    try:
        ssl_info = {'pemfile': pki.client_pem('web1'), 'cacert': pki.ca_cert}
        handler = make_handler('demo', '127.0.0.1', listener.port, ssl_info=ssl_info)
        logger = logger_for(handler)
        for i in range(3):
            logger.info('secret record %d', i)
        wait_for(lambda: len(listener.connections) >= 3, 10, 'three handshake attempts')
        handler.flush_timeout = 0.5
        handler.close()
        assert handler.dropped_total == 3
        for data in list(listener.connections)[:-1]:
            assert tls_record_types(bytes(data))[0] == 0x16  # the ClientHello
            assert set(tls_record_types(bytes(data))) <= {0x15, 0x16}  # handshake and alerts only
            assert b'secret record' not in data and b'version' not in data
    finally:
        listener.close()


def test_tls_key_and_certificate_in_separate_files(pki, make_handler, tmp_path):
    with open(pki.client_pem('web1'), encoding='ascii') as stream:
        pem = stream.read()
    parts = ['-----BEGIN' + part for part in pem.split('-----BEGIN')[1:]]
    key = ''.join(part for part in parts if 'PRIVATE KEY' in part)
    cert = ''.join(part for part in parts if 'PRIVATE KEY' not in part)
    (tmp_path / 'web1.key').write_text(key)
    (tmp_path / 'web1.crt').write_text(cert)
    server = Capture(tls=server_context(pki))
    try:
        ssl_info = {'pemfile': str(tmp_path / 'web1.crt'), 'keyfile': str(tmp_path / 'web1.key'),
                    'cacert': pki.ca_cert}
        handler = make_handler('demo', '127.0.0.1', server.port, ssl_info=ssl_info)
        logger_for(handler).info('separate key')
        assert [r['body'] for r in server.wait_for_records(1)] == ['separate key']
    finally:
        server.close()


def test_a_server_with_a_certificate_from_another_ca_gets_nothing(pki, make_handler, capsys):
    impostor = Capture(tls=server_context(pki, pki.other_ca_client_pem('impostor')))
    try:
        ssl_info = {'pemfile': pki.client_pem('web1'), 'cacert': pki.ca_cert}
        handler = make_handler('demo', '127.0.0.1', impostor.port, ssl_info=ssl_info, print_debug=True)
        logger_for(handler).info('for the real server only')
        wait_for(lambda: 'certificate verify failed' in capsys.readouterr().err, 10, 'a verification failure')
        assert handler.queued == 1
        assert impostor.frames() == []
    finally:
        impostor.close()


# Acknowledged delivery (protocol 1.1) -------------------------------------------

def test_acknowledged_records_carry_client_id_and_seq_and_leave_the_queue_on_ack(make_handler):
    server = Capture(acking=True)
    try:
        handler = make_handler('demo', '127.0.0.1', server.port, acknowledged=True, secret='sekrit')
        logger = logger_for(handler)
        for i in range(50):
            logger.info('acked %d', i)
        wait_for(lambda: handler.queued == 0, 10, 'every record acknowledged')
        frames = server.frames()
        records = server.records()
        assert [r['seq'] for r in records] == list(range(1, 51))
        assert len({r['client_id'] for r in records}) == 1
        assert all(decode_datagram(frame)[0] == FLAG_ACK_REQUEST for frame in frames)
        assert frames[0] == encode_message('demo', logger.name, records[0]['stamp'], records[0]['nsecs'],
                                           handler.hostname, 'acked 0', 'sekrit', False,
                                           records[0]['client_id'], 1, caps='batch')
        assert not any('caps' in record for record in records[1:])  # a 1.1 server: version 1 frames go on
        assert handler.acknowledged and handler.dropped_total == 0
    finally:
        server.close()


def test_acknowledged_is_the_default_over_tcp_and_off_over_udp(make_handler):
    server = Capture()
    try:
        handler = make_handler('demo', '127.0.0.1', server.port)
        logger_for(handler).info('asks by default')
        wait_for(lambda: handler.queued == 0, 10, 'the acknowledgement')
        assert handler.acknowledged and handler.ack_fallback_seconds == 10.0
        assert [decode_datagram(frame)[0] for frame in server.frames()] == [FLAG_ACK_REQUEST]
        assert not make_handler('demo', '127.0.0.1', server.port, stream=False).acknowledged
    finally:
        server.close()


@pytest.fixture
def old_server():
    """A server without acknowledged delivery (like the original loghogd): it stores bytes, never answers."""
    server = Capture(acking=False)
    yield server
    server.close()


def shut_server_side(server: Capture, connection: int) -> None:
    """The server ends connection number `connection` (0-based), as a restarting loghogd would."""
    wait_for(lambda: len(server.peers) > connection, 5, 'the server side of connection %d' % connection)
    server.peers[connection].shutdown(socket.SHUT_RDWR)


def connection_records(server: Capture) -> List[List[Dict[str, object]]]:
    return [[decode(encode_message_bytes(*frame)) for frame in StreamDecoder().feed(bytes(data))]
            for data in list(server.connections)]


def test_unacknowledged_records_are_resent_in_order_on_the_next_connection(old_server, make_handler):
    handler = make_handler('demo', '127.0.0.1', old_server.port)
    logger = logger_for(handler)
    for i in range(5):
        logger.info('kept %d', i)
    old_server.wait_for_records(5)
    assert handler.queued == 5  # written, but nobody acknowledged them
    old_server.acking = True
    shut_server_side(old_server, 0)
    wait_for(lambda: handler.queued == 0, 10, 'the resent records acknowledged')
    first, second = connection_records(old_server)
    assert [r['seq'] for r in first] == [r['seq'] for r in second] == [1, 2, 3, 4, 5]
    assert [r['body'] for r in second] == ['kept %d' % i for i in range(5)]
    assert handler.dropped_total == 0


def test_the_queue_bound_holds_for_unacknowledged_records_and_the_newest_are_resent(old_server, make_handler):
    """Records waiting for an ACK count against max_buffer_size; a full queue gives up the oldest."""
    handler = make_handler('demo', '127.0.0.1', old_server.port, max_buffer_size=5)
    logger = logger_for(handler)
    for i in range(8):
        logger.info('n %d', i)
        old_server.wait_for_records(i + 1)  # each one sent before the next pushes the oldest out
    assert handler.queued == 5
    old_server.acking = True
    shut_server_side(old_server, 0)
    wait_for(lambda: handler.queued == 0, 10, 'the resent records acknowledged')
    first, second = connection_records(old_server)
    assert [r['seq'] for r in first] == list(range(1, 9))
    assert [r['body'] for r in second] == ['n %d' % i for i in range(3, 8)]
    assert handler.dropped_total == 3  # sent once but never confirmed: counted, as they may be lost


def test_a_server_that_never_acknowledges_gets_every_record_once_across_the_fallback(old_server, make_handler, capsys):
    """Records sent in acknowledged mode before the fallback are not sent again: an old server writes them once."""
    handler = make_handler('demo', '127.0.0.1', old_server.port, ack_fallback_seconds=0.3)
    logger = logger_for(handler)
    for i in range(20):
        logger.info('before %d', i)
    wait_for(lambda: not handler.acknowledged, 10, 'the fallback')
    for i in range(20):
        logger.info('after %d', i)
    old_server.wait_for_records(40)
    handler.close()
    assert old_server.bodies() == ['before %d' % i for i in range(20)] + ['after %d' % i for i in range(20)]
    assert [decode_datagram(frame)[0] for frame in old_server.frames()] == [FLAG_ACK_REQUEST] * 20 + [0] * 20
    err = capsys.readouterr().err
    assert err.count('sent no acknowledgement for 0.3 s') == 1 and 'may be lost' not in err
    assert handler.dropped_total == 0 and handler.queued == 0 and len(old_server.connections) == 1


def test_a_connection_lost_before_the_fallback_resends_and_an_old_server_duplicates(old_server, make_handler):
    """The documented cost of the default against an old server: it cannot recognise a resent record."""
    handler = make_handler('demo', '127.0.0.1', old_server.port, ack_fallback_seconds=0.5)
    logger = logger_for(handler)
    for i in range(5):
        logger.info('early %d', i)
    old_server.wait_for_records(5)
    shut_server_side(old_server, 0)
    old_server.wait_for_records(10)
    wait_for(lambda: not handler.acknowledged, 10, 'the fallback on the second connection')
    logger.info('late')
    old_server.wait_for_records(11)
    handler.close()
    early = ['early %d' % i for i in range(5)]
    assert old_server.bodies() == early + early + ['late']
    assert handler.dropped_total == 0


def test_a_server_that_acknowledged_once_is_waited_for_not_fallen_back_from(make_handler, capsys):
    server = Capture()
    try:
        handler = make_handler('demo', '127.0.0.1', server.port, ack_fallback_seconds=0.2)
        logger = logger_for(handler)
        logger.info('first')
        wait_for(lambda: handler.queued == 0, 10, 'the first acknowledgement')
        server.acking = False  # a 1.1 server that stalls (busy disk, SIGSTOP)
        logger.info('second')
        server.wait_for_records(2)
        time.sleep(0.6)  # three times the fallback time with a record in flight and no ACK
        assert handler.acknowledged and handler.queued == 1
        server.acking = True
        shut_server_side(server, 0)
        wait_for(lambda: handler.queued == 0, 10, 'the resent record acknowledged')
        assert [[r['seq'] for r in records] for records in connection_records(server)] == [[1, 2], [2]]
        assert 'no acknowledgement' not in capsys.readouterr().err
    finally:
        server.close()


def test_close_against_a_server_that_never_acknowledged_says_why(old_server, make_handler, capsys):
    handler = make_handler('demo', '127.0.0.1', old_server.port)
    logger = logger_for(handler)
    for i in range(3):
        logger.info('unanswered %d', i)
    old_server.wait_for_records(3)
    handler.flush_timeout = 0.3
    handler.close()
    err = capsys.readouterr().err
    assert '3 record(s) not acknowledged' in err and 'never acknowledged a record' in err
    assert 'acknowledged=False' in err and handler.dropped_total == 3


def test_ack_fallback_seconds_must_be_positive():
    with pytest.raises(ValueError, match='ack_fallback_seconds'):
        LoghogHandler('demo', ack_fallback_seconds=0)


@pytest.mark.filterwarnings('ignore:This process .* is multi-threaded')  # the point: fork after threads
def test_a_forked_child_acknowledges_under_its_own_client_id(make_handler):
    server = Capture(acking=True)
    try:
        handler = make_handler('demo', '127.0.0.1', server.port, acknowledged=True)
        logger = logger_for(handler)
        logger.info('parent')
        wait_for(lambda: handler.queued == 0, 10, 'the parent record acknowledged')
        pid = os.fork()
        if pid == 0:
            try:
                logger.info('child')
                handler.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        parent, child = server.wait_for_records(2)
        assert (parent['body'], child['body']) == ('parent', 'child')
        assert parent['client_id'] != child['client_id']
        assert parent['seq'] == child['seq'] == 1
    finally:
        server.close()


# Packaging ------------------------------------------------------------------

def test_client_distribution_is_the_loghog_package_alone_with_no_dependencies(tmp_path):
    import shutil
    import zipfile
    shutil.copytree(os.path.join(REPO, 'loghog'), tmp_path / 'loghog',
                    ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(os.path.join(REPO, 'client'), tmp_path / 'client',
                    ignore=shutil.ignore_patterns('build', '*.egg-info'))
    # the test venv has setuptools and wheel, so the build needs no index (and proves that the
    # setuptools of Python 3.11's venv, 65, reads the metadata in client/pyproject.toml)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index',
                    '-q', '-w', str(tmp_path / 'dist'), str(tmp_path / 'client')], check=True, timeout=300)
    [wheel] = os.listdir(tmp_path / 'dist')
    assert wheel.startswith('loghog-') and wheel.endswith('-py3-none-any.whl')
    with zipfile.ZipFile(tmp_path / 'dist' / wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(name for name in names if name.endswith('/METADATA'))).decode()
    assert sorted(name for name in names if '.dist-info/' not in name) == [
        'loghog/__init__.py', 'loghog/batch.py', 'loghog/batcher.py', 'loghog/encoder.py', 'loghog/fields.py',
        'loghog/handler.py', 'loghog/outbox.py', 'loghog/oversized.py',
        'loghog/protocol.py', 'loghog/replay.py', 'loghog/sender.py', 'loghog/servers.py', 'loghog/spool.py',
        'loghog/transport.py']
    requirements = [line for line in metadata.splitlines() if line.startswith('Requires-Dist')]
    assert requirements == ['Requires-Dist: msgspec>=0.18; extra == "fast"']  # optional: it only encodes faster


def test_emit_benchmark_runs_and_prints_every_handler():
    output = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'client_emit.py'),
                             '--records', '300', '--rounds', '1'],
                            check=True, capture_output=True, text=True, timeout=300).stdout
    rows = [line.split()[0] for line in output.splitlines()[2:]]
    assert rows == ['loghog', 'loghog,', 'loghog,', 'logging.FileHandler', 'loghog'], output


# The queue ------------------------------------------------------------------

@settings(max_examples=300)
@given(sizes=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=700),
       max_bytes=st.integers(min_value=1, max_value=20000), sent=st.integers(min_value=0, max_value=700),
       confirmed=st.integers(min_value=0, max_value=700))
def test_outbox_hands_out_the_longest_run_within_the_byte_bound_and_confirms_exactly_up_to_a_seq(
        sizes, max_bytes, sent, confirmed):
    outbox = Outbox(10 ** 9)
    for number, size in enumerate(sizes, 1):
        outbox.push(number, size)
    sent = min(sent, len(sizes) - 1)
    if sent:
        outbox.take_unsent(10 ** 9, sent + 1)
    batch = outbox.take_unsent(max_bytes)
    fits = max(1, max(count for count in range(len(sizes) - sent + 1) if sum(sizes[sent:sent + count]) <= max_bytes))
    assert [(seq, item) for seq, item, _ in batch] == [(seq, seq) for seq in range(sent + 1, sent + 1 + fits)]
    outbox.confirm(confirmed)
    left = sizes[confirmed:]
    assert (len(outbox), outbox.bytes, outbox.oldest_seq()) == (len(left), sum(left), min(confirmed, len(sizes)) + 1)


@settings(max_examples=500)
@given(max_records=st.one_of(st.none(), st.integers(min_value=1, max_value=8)),
       max_bytes=st.integers(min_value=1, max_value=40), spool_backed=st.booleans(),
       steps=st.lists(st.tuples(st.sampled_from(['push', 'take', 'confirm', 'fail', 'spool']), st.integers(1, 12)),
                      max_size=80))
def test_outbox_never_loses_count_of_a_record_and_never_confirms_one_twice(max_records, max_bytes, spool_backed,
                                                                          steps):
    """Every record ends up confirmed once, dropped once, or still queued; the bounds always hold.

    With a spool behind the queue, records evicted once spooled stay queued (on disk), never dropped.
    """
    outbox = Outbox(max_bytes, max_records)
    outbox.spool_backed = spool_backed
    pushed = 0
    sizes = {}
    in_flight: List[int] = []
    confirmed: List[int] = []
    for step, size in steps + [('fail', 0)]:
        if step == 'push':
            pushed += 1
            sizes[pushed] = size
            outbox.push(pushed, size)
        elif step == 'spool':
            unspooled = outbox.unspooled()
            if unspooled:
                outbox.spooled(unspooled[-1][0])
        elif step == 'take':
            batch = [(seq, item) for seq, item, _ in
                     outbox.take_unsent(size * 3, outbox.first_unspooled() if spool_backed else None)]
            assert len(batch) <= 1 or sum(sizes.get(seq, 0) for seq, _ in batch) <= size * 3
            assert all(seq not in in_flight and seq not in confirmed for seq, _ in batch)
            assert all(item in (seq, None) for seq, item in batch)
            assert [seq for seq, _ in batch] == sorted(seq for seq, _ in batch)
            assert not in_flight or not batch or batch[0][0] > in_flight[-1]
            in_flight.extend(seq for seq, _ in batch)
        elif step == 'confirm' and in_flight:
            outbox.confirm(in_flight[-1])
            confirmed.extend(in_flight)
            in_flight = []
        elif step == 'fail':
            outbox.rewind()
            in_flight = []
        assert max_records is None or len(outbox._entries) <= max_records
        assert outbox.bytes <= max_bytes or len(outbox._entries) == 1
        assert spool_backed or outbox._disk_first == 0
    assert confirmed == sorted(set(confirmed))
    assert pushed == len(confirmed) + outbox.dropped_total + len(outbox)
    left = len(outbox)
    on_disk = outbox._disk_count()
    dropped = outbox.dropped_total
    assert outbox.discard() == left - on_disk
    assert (len(outbox), outbox.dropped_total, outbox.bytes) == (0, dropped + left - on_disk, 0)
