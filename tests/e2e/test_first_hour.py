"""What a new user trips over in the first hour, as they meet it.

A signed record for a facility without a secret is written, counted in
`signature_unused` and named once in the daemon's log; a mistyped app id
shows in --status's rejection table, which stays bounded however many ids
a peer invents; loghog-client-cert without --dir says how to name the CA.
"""

import subprocess

import pytest

from loghogd import certs
from loghogd.stats import MAX_REJECTED_APPS, OTHER_REJECTED_APPS, Counters
from tests.e2e.test_operations import internal_log, status_number
from tests.support.daemon import LOGHOGD, Loghogd, facilities_conf, frame, wait_for

FACILITIES = facilities_conf({'my-first-app': {}, 'my-first-app:web': {}})


@pytest.fixture
def daemon(tmp_path):
    running = Loghogd(tmp_path, FACILITIES)
    started = running.start_detached()
    assert started.returncode == 0, started.stderr
    yield running
    running.stop()


def status_text(daemon: Loghogd) -> str:
    status = subprocess.run([LOGHOGD, '--status', '-c', daemon.config_path], capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0, status.stderr
    return status.stdout


def test_a_signed_record_without_a_secret_is_written_counted_and_said_once(daemon):
    daemon.send_tcp(b''.join(frame('my-first-app', 'web.views', 'signed %d' % i, secret='sekrit')
                             for i in range(3)))
    daemon.send_tcp(frame('my-first-app', 'root', 'signed root', secret='sekrit'))
    daemon.send_tcp(frame('my-first-app', 'root', 'plain'))
    daemon.wait_for_lines('my-first-app/web.log', 3)
    daemon.wait_for_lines('my-first-app/root.log', 2)
    assert daemon.stats()['signature_unused'] == 4
    assert status_number(status_text(daemon), 'signatures unused (no secret)') == 4
    text = wait_for(lambda: 'no secret' in internal_log(daemon) and internal_log(daemon), 10, 'the warning')
    warnings = [line for line in text.splitlines() if 'signs its records' in line]
    assert len(warnings) == 2, warnings  # one per facility: my-first-app:web and my-first-app
    assert all('127.0.0.1' in line and 'facilities.conf' in line for line in warnings), warnings


def test_a_mistyped_app_id_is_named_in_the_status_rejection_table(daemon):
    daemon.send_tcp(frame('my-frist-app', 'root', 'lost') * 2 + frame('my-first-app', 'root', 'fence'))
    daemon.wait_for_lines('my-first-app/root.log', 1)
    text = status_text(daemon)
    assert status_number(text, 'unknown_app', indent=4) == 2
    assert status_number(text, 'my-frist-app', indent=4) == 2
    assert daemon.stats()['rejected_by_app'] == {'my-frist-app': 2}


def test_the_rejection_table_by_app_is_bounded():
    counters = Counters()
    for number in range(MAX_REJECTED_APPS + 50):
        counters.reject('unknown_app', 'app-%d' % number)
    counters.reject('unknown_app', 'app-0')
    table = counters.snapshot()['rejected_by_app']
    assert len(table) == MAX_REJECTED_APPS + 1
    assert table['app-0'] == 2 and table[OTHER_REJECTED_APPS] == 50


def test_client_cert_without_dir_suggests_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(certs, 'DEFAULT_DIR', str(tmp_path / 'etc-loghogd-certs'))
    monkeypatch.chdir(tmp_path)
    assert certs.client_cert_main(['web1']) == 1
    error = capsys.readouterr().err
    assert 'without --dir' in error and '--dir var/certs' in error, error
    assert certs.client_cert_main(['web1', '--dir', str(tmp_path / 'elsewhere')]) == 1
    assert 'without --dir' not in capsys.readouterr().err
