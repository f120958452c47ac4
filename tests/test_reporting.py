"""Rate-limited reports: a burst is cut short and summed up when its window ends."""

import logging

import pytest

from loghogd.reporting import RateLimitedReporter, peer_text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def messages(caplog):
    return [record.getMessage() for record in caplog.records if record.name == 'loghogd']


def test_a_burst_is_cut_at_the_limit_and_summed_up_by_the_timer_alone(clock, caplog):
    caplog.set_level(logging.INFO, logger='loghogd')
    reporter = RateLimitedReporter(interval=10.0, burst=3, clock=clock)
    for number in range(8):
        reporter.report('reject:bad_json', logging.WARNING, 'bad frame %d from %s', number, '192.0.2.1:5000')
    assert messages(caplog) == ['bad frame %d from 192.0.2.1:5000' % number for number in range(3)]
    assert reporter.next_flush() == 10.0
    clock.now += 9.5
    reporter.flush()
    assert len(messages(caplog)) == 3
    assert reporter.next_flush() == pytest.approx(0.5)
    clock.now += 0.5
    reporter.flush()
    assert messages(caplog)[3:] == ['5 more reports of reject:bad_json were suppressed in the last 10 s']
    assert caplog.records[-1].levelno == logging.WARNING
    assert reporter.next_flush() == float('inf')
    reporter.flush()
    assert len(messages(caplog)) == 4


def test_a_window_without_suppressed_reports_needs_no_wake_up(clock, caplog):
    caplog.set_level(logging.INFO, logger='loghogd')
    reporter = RateLimitedReporter(interval=10.0, burst=3, clock=clock)
    reporter.report('tls', logging.WARNING, 'one')
    assert reporter.next_flush() == float('inf')
    clock.now += 20
    reporter.flush()
    assert messages(caplog) == ['one']


def test_flushing_everything_at_stop_writes_pending_summaries(clock, caplog):
    caplog.set_level(logging.INFO, logger='loghogd')
    reporter = RateLimitedReporter(interval=10.0, burst=1, clock=clock)
    for _ in range(3):
        reporter.report('read', logging.INFO, 'failed')
    clock.now += 2
    reporter.flush(everything=True)
    assert messages(caplog) == ['failed', '2 more reports of read were suppressed in the last 2 s']


def test_a_later_report_of_the_same_key_still_sums_up_the_previous_window(clock, caplog):
    caplog.set_level(logging.INFO, logger='loghogd')
    reporter = RateLimitedReporter(interval=10.0, burst=1, clock=clock)
    reporter.report('k', logging.ERROR, 'first')
    reporter.report('k', logging.ERROR, 'held back')
    clock.now += 11
    reporter.report('k', logging.ERROR, 'second')
    assert messages(caplog) == ['first', '1 more reports of k were suppressed in the last 11 s', 'second']


def test_peer_text_escapes_and_bounds():
    assert peer_text('a\nb\x1b[31m') == 'a\\nb\\x1b[31m'
    assert len(peer_text('x' * 1000)) == 203
