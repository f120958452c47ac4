"""[server] limits per client: their parsing, and the accounting that enforces them."""

import socket
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghog.protocol import FLAG_ZLIB, StreamDecoder
from loghogd.config import ConfigError, ServerConfig, load_config
from loghogd.ini import parse_seconds
from loghogd.limits import Connection, ConnectionLimits
from loghogd.listeners import peer_host
from loghogd.reporting import RateLimitedReporter
from loghogd.stats import Counters

MiB = 1024 * 1024


def server_config(tmp_path: Path, text: str) -> ServerConfig:
    path = tmp_path / 'loghogd.conf'
    path.write_text('[server]\n' + text, encoding='utf-8')
    return load_config(str(path)).server


def test_the_defaults_bound_every_share(tmp_path: Path) -> None:
    server = server_config(tmp_path, '')
    assert (server.max_connections_per_address, server.tls_reserved_connections) == (256, 1024)
    assert (server.tls_handshake_timeout, server.idle_timeout, server.frame_timeout) == (5.0, 60.0, 60.0)
    assert (server.max_buffered_bytes, server.max_buffered_bytes_per_peer) == (64 * MiB, 8 * MiB)
    assert server.max_inflated_bytes_per_second == 8 * MiB


def test_a_default_share_grows_to_hold_one_frame_but_a_set_one_must_hold_it(tmp_path: Path) -> None:
    server = server_config(tmp_path, 'max_message_size = 100M\n')
    assert server.max_buffered_bytes_per_peer == 100 * MiB + 8
    assert server.max_buffered_bytes == 100 * MiB + 8
    with pytest.raises(ConfigError, match=r'line 3, \[server\] max_buffered_bytes_per_peer: .*max_message_size'):
        server_config(tmp_path, 'max_message_size = 2M\nmax_buffered_bytes_per_peer = 1M\n')
    with pytest.raises(ConfigError, match=r'\[server\] max_buffered_bytes: .*max_buffered_bytes_per_peer'):
        server_config(tmp_path, 'max_buffered_bytes = 4M\n')


@pytest.mark.parametrize('text', ['tls_handshake_timeout = 0', 'tls_handshake_timeout = 61', 'idle_timeout = 0.5',
                                  'frame_timeout = 1e3', 'idle_timeout = -1', 'max_connections_per_address = 0'])
def test_out_of_range_limits_are_config_errors_naming_the_key(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r'\[server\] %s: ' % text.split()[0]):
        server_config(tmp_path, text + '\n')


@given(st.text(max_size=12))
@settings(max_examples=300)
def test_parse_seconds_returns_a_number_in_range_or_raises_value_error(raw: str) -> None:
    try:
        seconds = parse_seconds(raw, 0.1, 60.0)
    except ValueError:
        return
    assert 0.1 <= seconds <= 60.0 and seconds == float(raw)


def limits(**options: object) -> ConnectionLimits:
    config = ServerConfig(listen=(), listen_ssl=(), pemfile=None, cacert=None, crlfile=None, **options)
    return ConnectionLimits(config, Counters(), RateLimitedReporter())


def connection(table: ConnectionLimits, host: str, now: float = 0.0) -> Connection:
    made = Connection(socket.socket(), host + ':1', host, StreamDecoder(), False, now)
    made.sock.close()
    table.opened(made)
    return made


def test_past_the_total_the_oldest_started_frames_give_way() -> None:
    table = limits(max_buffered_bytes=3000, max_buffered_bytes_per_peer=2000, max_message_size=8192)
    first, second, third = (connection(table, '10.0.0.%d' % n) for n in (1, 2, 3))
    for now, stalled in enumerate((first, second, third)):
        stalled.decoder.feed(b'\0\0\x10\0\0\0\0\0' + b'x' * 1092)
        victims = table.account(stalled, float(now), False)
    assert victims == [first]
    assert table.buffered_total == 2200 and table.counters.connections_closed_buffer_full == 1
    table.closed(first)
    assert table.buffered_total == 2200 and table.open_count == 2


def test_every_count_returns_to_zero_when_the_connections_close() -> None:
    table = limits(max_connections_per_address=2)
    held = [connection(table, '10.0.0.1') for _ in range(2)]
    assert table.refusal('10.0.0.1', tls=False) == 'max_connections_per_address'
    assert table.refusal('10.0.0.2', tls=False) is None
    held[0].decoder.feed(b'\0\0\0\x20\0\0\0\0abc')
    table.account(held[0], 0.0, False)
    for closing in held:
        table.closed(closing)
    assert (table.open_count, table.buffered_total, table.by_host, table.buffered_by_host) == (0, 0, {}, {})
    assert not table.holding and not table.never_framed


def test_the_plain_tcp_pool_leaves_the_tls_reserve() -> None:
    table = limits(max_connections=10, tls_reserved_connections=4)
    table.fit(10, tls_listening=True)
    for number in range(6):
        connection(table, '10.0.0.%d' % number)
    assert table.refusal('10.0.1.1', tls=False) == 'max_connections'
    assert table.refusal('10.0.1.1', tls=True) is None


def test_inflating_past_the_budget_holds_the_rest_until_it_refills() -> None:
    table = limits(max_inflated_bytes_per_second=1000)
    frames = [(FLAG_ZLIB, zlib.compress(b'a' * 600))] * 3
    ready, waiting = table.inflate('10.0.0.1', 'peer', frames, 0.0)
    assert [len(payload) for _flags, payload in ready] == [600, 600] and len(waiting) == 1
    assert table.resume_at('10.0.0.1', 0.0) == pytest.approx(0.2 + 0.01)
    ready, waiting = table.inflate('10.0.0.1', 'peer', waiting, 0.25)
    assert len(ready) == 1 and not waiting and table.counters.inflated_bytes == 1800


@pytest.mark.parametrize('address, counted_as', [
    (('192.0.2.7', 4000), '192.0.2.7'),
    (('2001:db8:1:2:aaaa::1', 4000, 0, 0), '2001:db8:1:2::/64'),
    (('2001:db8:1:2:ffff::9', 4001, 0, 0), '2001:db8:1:2::/64'),
    (('fe80::1%eth0', 4000, 0, 2), 'fe80::/64'),
])
def test_limits_count_an_ipv6_client_by_its_64(address: tuple, counted_as: str) -> None:
    assert peer_host(address) == counted_as
