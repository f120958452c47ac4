"""Version 1 frames a 0.7 client sends unsigned take a quicker path in the processor: the same lines, in order.

The quick path starts once a route is known and stops at the first frame
it does not take, so these tests send one record first, then everything
else in one write: plain records for two files, the frames the quick path
leaves to the usual one between them, and controls to escape.
"""

import json
import re

from loghog.protocol import encode_frame
from tests.support.daemon import Loghogd, facilities_conf, frame, wait_for

FACILITIES = facilities_conf({'app': {}, 'app:web': {}, 'signed': {'secret': 'k'}, 'jsonapp': {'format': 'json'}})
STAMP = r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}'


def classic(lines, host: str = 'h'):
    """The bodies of classic lines from `host`; fails on any other line."""
    found = []
    for line in lines:
        match = re.fullmatch(STAMP + ' - ' + re.escape(host) + ' - (.*)\n', line, re.S)
        assert match, line
        found.append(match.group(1))
    return found


def test_plain_frames_between_every_other_kind_keep_their_order_and_escaping(tmp_path):
    plain_root = ['root %d' % index for index in range(50)]
    plain_web = ['web %d' % index for index in range(50)]
    mixed = [frame('app', 'root', 'first', 'h')]
    mixed += [frame('app', 'root', body, 'h') for body in plain_root[:25]]
    mixed += [frame('app', 'web', body, 'h') for body in plain_web[:25]]
    mixed += [frame('app', 'root', 'ESC \x1b[2J CR \r DEL \x7f bidi \u202e tab \t end', 'h'),
              frame('signed', 'root', 'signed', 'h', secret='k'),
              frame('jsonapp', 'root', 'as json', 'h'),
              encode_frame(b'{"version": 1, "app_id": "app"'),
              frame('app', 'root', 'signed for a facility without a secret', 'h', secret='x'),
              frame('nosuchapp', 'root', 'unknown', 'h')]
    mixed += [frame('app', 'root', body, 'h') for body in plain_root[25:]]
    mixed += [frame('app', 'web', body, 'h') for body in plain_web[25:]]
    with Loghogd(tmp_path, FACILITIES) as daemon:
        with daemon.connect_tcp() as sock:
            sock.sendall(mixed[0])
            daemon.wait_for_lines('app/root.log', 1)
            sock.sendall(b''.join(mixed[1:]))
            sock.sendall(b''.join(frame('app', module, 'last of %s' % module, 'h') for module in ('root', 'web')))
        root = daemon.wait_for_lines('app/root.log', 54)
        web = daemon.wait_for_lines('app/web.log', 51)
        signed = daemon.wait_for_lines('signed/root.log', 1)
        as_json = daemon.wait_for_lines('jsonapp/root.log', 1)
        wait_for(lambda: daemon.stats()['rejected_by_reason'] == {'bad_json': 1, 'unknown_app': 1},
                 what='the bad frame and the unknown app counted')
        stats = daemon.stats()
    assert classic(root) == (['first'] + plain_root[:25]
                             + ['ESC \\x1b[2J CR \\x0d DEL \\x7f bidi \\u202e tab \t end',
                                'signed for a facility without a secret'] + plain_root[25:] + ['last of root'])
    assert classic(web) == plain_web + ['last of web']
    assert classic(signed) == ['signed']
    assert json.loads(as_json[0])['message'] == 'as json'
    assert stats['accepted_by_facility'] == {'app:root': 54, 'app:web': 51, 'signed:root': 1, 'jsonapp:root': 1}
