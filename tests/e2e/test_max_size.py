"""Exact max_size: a file never passes it, whatever one loop pass holds."""

import gzip
import os
import socket
import time

from loghog.batch import encode_batch
from tests.e2e.test_rotation import backups, send_and_wait
from tests.support.daemon import Loghogd, bodies, frame, wait_for

SIZED = '[sized]\nrotate = size\nmax_size = %d\nbackup_count = 500\n'
GZIP = {'compressor': {'format': 'gzip', 'level': '1'}}


def sized_files(daemon: Loghogd) -> list:
    """(size, bodies) of each backup, oldest first, then of the live file; waits for the compressor."""
    names = wait_for(lambda: (lambda found: found if found and all(name.endswith('.gz') for name in found)
                              else None)(backups(daemon, 'sized/root.log')), 30, 'compressed backups')
    files = []
    for name in names:
        with gzip.open(os.path.join(daemon.path('sized'), name)) as stream:
            data = stream.read()
        files.append((len(data), bodies(data.decode('utf-8').splitlines(keepends=True))))
    with open(daemon.path('sized/root.log'), 'rb') as stream:
        data = stream.read()
    files.append((len(data), bodies(data.decode('utf-8').splitlines(keepends=True))))
    return files


def test_one_pass_larger_than_max_size_is_split_before_the_write(tmp_path):
    with Loghogd(tmp_path, SIZED % 20000, config=GZIP) as daemon:
        sent = ['record %05d %s' % (number, 'x' * 250) for number in range(1000)]
        daemon.send_tcp(b''.join(frame('sized', 'root', body) for body in sent))
        wait_for(lambda: daemon.stats()['accepted'] == len(sent), 20, 'all records accepted')
        send_and_wait(daemon, 'sized', 'last', 'sized/root.log')
        files = sized_files(daemon)
    assert [body for _size, found in files for body in found] == sent + ['last']
    assert len(files) > 10
    assert max(size for size, _found in files) <= 20000
    assert all(size > 20000 - 400 for size, _found in files[:-1])


def test_a_record_larger_than_max_size_is_alone_in_its_file(tmp_path):
    with Loghogd(tmp_path, SIZED % 2000, config=GZIP) as daemon:
        sent = ['small 1', 'big ' + 'y' * 5000, 'small 2', 'small 3']
        daemon.send_tcp(b''.join(frame('sized', 'root', body) for body in sent))
        wait_for(lambda: daemon.stats()['accepted'] == len(sent), 20, 'all records accepted')
        files = sized_files(daemon)
    assert [found for _size, found in files] == [['small 1'], [sent[1]], ['small 2', 'small 3']]
    assert [size > 2000 for size, _found in files] == [False, True, False]


def test_batches_and_syslog_runs_keep_to_max_size_record_by_record(tmp_path):
    """A batch or a run of syslog lines is queued as one string for speed, but never where max_size applies."""
    with Loghogd(tmp_path, SIZED % 20000, config=dict(GZIP, server={'listen_ipv4_syslog': '127.0.0.1:0'})) as daemon:
        batched = ['batched %05d %s' % (number, 'x' * 250) for number in range(600)]
        now_us = int(time.time() * 1e6)
        daemon.send_tcp(b''.join(encode_batch('sized', 'web1', None, None,
                                              [('root', now_us, body) for body in batched[first:first + 200]])
                                 for first in range(0, len(batched), 200)))
        wait_for(lambda: daemon.stats()['accepted'] == len(batched), 20, 'the batches accepted')
        logged = ['logged %05d %s' % (number, 'y' * 250) for number in range(300)]
        with socket.create_connection(('127.0.0.1', daemon.ports['syslog-tcp'])) as sock:
            sock.sendall(b''.join(b'<14>Dec  1 12:00:00 web1 sized: %s\n' % body.encode() for body in logged))
        wait_for(lambda: daemon.stats()['accepted'] == len(batched) + len(logged), 20, 'the syslog lines accepted')
        send_and_wait(daemon, 'sized', 'last', 'sized/root.log')
        files = sized_files(daemon)
    assert [body for _size, found in files for body in found] == batched + logged + ['last']
    assert max(size for size, _found in files) <= 20000
    assert all(size > 20000 - 400 for size, _found in files[:-2])
