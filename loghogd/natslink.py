"""The NATS client beside the loop: its own thread and asyncio loop.

The single-threaded loop never waits for NATS. It hands work over with
`call` (thread-safe scheduling on the asyncio loop); the thread hands
results back by appending to `events` (a deque, safe between threads) and
waking the loop through the socket its signal handlers also write to.
Only this module and its callers import nats-py, and only when
loghogd.conf has a [forward] or [consume] section.
"""

import asyncio
import collections
import logging
import socket
import ssl
import threading
from typing import Any, Awaitable, Callable, Deque, Dict, Optional

from loghogd.listeners import ServerError
from loghogd.reporting import RateLimitedReporter
from loghogd.streamconfig import NatsConnection

log = logging.getLogger('loghogd')

RECONNECT_WAIT = 0.5
CONNECT_TIMEOUT = 2.0
STOP_SECONDS = 5.0


class NatsUnavailable(ServerError):
    """nats-py is not installed but the config asks for a JetStream link."""


def import_nats() -> Any:
    try:
        import nats
    except ImportError:
        raise NatsUnavailable('[forward] and [consume] need the NATS client nats-py: '
                              'install python3 package nats-py (pip install "loghogd[nats]")') from None
    return nats


def connect_options(connection: NatsConnection, name: str) -> Dict[str, Any]:
    """nats.connect keyword arguments: reconnect forever, TLS and credentials as configured."""
    options: Dict[str, Any] = {
        'servers': list(connection.servers), 'name': name, 'connect_timeout': CONNECT_TIMEOUT,
        'allow_reconnect': True, 'max_reconnect_attempts': -1, 'reconnect_time_wait': RECONNECT_WAIT,
    }
    if connection.credentials is not None:
        options['user_credentials'] = connection.credentials
    if connection.tls_ca is not None or connection.tls_cert is not None:
        context = ssl.create_default_context(cafile=connection.tls_ca)
        if connection.tls_cert is not None:
            context.load_cert_chain(connection.tls_cert, connection.tls_key)
        options['tls'] = context
    return options


class NatsLink:
    """One thread running one asyncio loop with one NATS connection."""

    def __init__(self, connection: NatsConnection, name: str, wake: Callable[[], None]) -> None:
        self.nats = import_nats()
        self.connection = connection
        self.name = name
        self.wake = wake
        self.events: Deque[tuple] = collections.deque()
        self.reporter = RateLimitedReporter(burst=1)
        self._woken = False
        """For the link's thread only: retries are reported once per key and interval."""
        self.loop = asyncio.new_event_loop()
        self.client: Any = None
        self.js: Any = None
        self.connected = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name='loghogd-' + name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call(self, function: Callable[..., Any], *arguments: Any) -> None:
        """Run `function(*arguments)` in the link's thread, soon; from the loop's thread."""
        self.loop.call_soon_threadsafe(function, *arguments)

    def spawn(self, coroutine: Awaitable[Any]) -> Any:
        """Start a task in the link's loop; only from the link's thread."""
        return self.loop.create_task(coroutine)

    def post(self, event: tuple) -> None:
        """Hand a result to the loop; from the link's thread. One wake-up per drain, not per event."""
        self.events.append(event)
        if not self._woken:
            self._woken = True
            self.wake()

    def take_events(self) -> Deque[tuple]:
        """The loop's side: what was posted; an event posted from now on wakes the loop again."""
        self._woken = False
        return self.events

    def stop(self, before_close: Optional[Callable[[], Awaitable[None]]] = None) -> None:
        """Close the connection (after `before_close`, bounded by STOP_SECONDS) and end the thread."""
        if not self._thread.is_alive():
            return

        async def finish() -> None:
            self._stopping = True
            try:
                if before_close is not None:
                    await asyncio.wait_for(before_close(), STOP_SECONDS)
            except asyncio.TimeoutError:
                log.warning('%s: stopped with work in flight; it is replayed at the next start', self.name)
            if self.client is not None:
                try:
                    await asyncio.wait_for(self.client.close(), STOP_SECONDS)
                except (asyncio.TimeoutError, Exception) as error:
                    log.info('%s: closing the NATS connection: %s', self.name, error or 'timed out')
            self.loop.stop()

        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(finish()))
        self._thread.join(STOP_SECONDS * 3)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._connect())
        self.loop.run_forever()

    async def _connect(self) -> None:
        """Connect, retrying while no server answers: nats-py retries only once connected."""
        options = connect_options(self.connection, 'loghogd-' + self.name)
        options.update(disconnected_cb=self._disconnected, reconnected_cb=self._reconnected)
        delay = RECONNECT_WAIT
        while not self._stopping:
            try:
                self.client = await self.nats.connect(**options)
            except Exception as error:  # nats-py raises several kinds; all mean "not yet"
                log.warning('%s: cannot reach NATS at %s (%s); retrying', self.name,
                            ', '.join(self.connection.servers), error or type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.js = self.client.jetstream()
            self.connected.set()
            log.info('%s: connected to NATS at %s', self.name, self.client.connected_url.netloc)
            return

    async def _disconnected(self) -> None:
        if not self._stopping:
            log.warning('%s: disconnected from NATS; reconnecting', self.name)

    async def _reconnected(self) -> None:
        log.info('%s: reconnected to NATS at %s', self.name, self.client.connected_url.netloc)


def socket_waker(sock: socket.socket) -> Callable[[], None]:
    """A wake-up for the loop: one byte on the socket its selector watches."""
    def wake() -> None:
        try:
            sock.send(b'\0')
        except (BlockingIOError, InterruptedError):
            pass  # the buffer is full: the loop is woken already
    return wake
