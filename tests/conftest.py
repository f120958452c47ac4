"""Settings and fixtures shared by the whole suite.

The suite runs on shared CI machines where a draw or an example can stall
for a second behind other work; these tests check behaviour, not speed, so
neither a per-example deadline nor the slow-generation health check applies.
Tests that take tmp_path rewrite the file they load in every example, so
one directory shared by all examples is intended.
"""

import time

import pytest
from hypothesis import HealthCheck, settings

from loghog import LoghogHandler

settings.register_profile('loghogd', deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile('loghogd')


@pytest.fixture
def make_handler():
    """LoghogHandler(...) that the test's end closes without waiting on its server."""
    handlers = []

    def make(*args, **kwargs) -> LoghogHandler:
        kwargs.setdefault('flush_timeout', 5.0)
        handler = LoghogHandler(*args, **kwargs)
        handlers.append(handler)
        return handler
    yield make
    for handler in handlers:
        handler.flush_timeout = 0.0
        handler.close()


@pytest.fixture
def berlin_time(monkeypatch):
    """Local time is Europe/Berlin (a zone with a DST fall-back) while the test runs."""
    monkeypatch.setenv('TZ', 'Europe/Berlin')
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
