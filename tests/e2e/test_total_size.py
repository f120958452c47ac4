"""max_total_size: the live file and its backups together stay under it, the oldest backups going first."""

import os
import random

from tests.e2e.test_rotation import backup_bodies, backups, force_rotation, send_and_wait
from tests.support.daemon import Loghogd, frame, wait_for

CAP = 6000


def noise(seed: int) -> list:
    """Records that gzip cannot shrink much: about 2 KiB compressed per rotation."""
    generator = random.Random(seed)
    return ['%d %s' % (seed, '%032x' % generator.getrandbits(128)) for _ in range(60)]


def test_oldest_backups_go_until_the_facility_fits_max_total_size(tmp_path):
    facilities = '[app]\nrotate = daily\nbackup_count = 20\nmax_total_size = %d\n' % CAP
    with Loghogd(tmp_path, facilities, config={'compressor': {'format': 'gzip', 'level': '1'}}) as daemon:
        for rotation in range(6):
            daemon.send_tcp(b''.join(frame('app', 'root', body) for body in noise(rotation)))
            daemon.wait_for_lines('app/root.log', 60)
            force_rotation(daemon, 'app/root.log')
            wait_for(lambda: all(name.endswith('.gz') for name in backups(daemon, 'app/root.log')), 20,
                     'compressed backups')
        send_and_wait(daemon, 'app', 'live line', 'app/root.log')
        names = backups(daemon, 'app/root.log')
        stats = daemon.stats()
    directory = daemon.path('app')
    total = os.path.getsize(daemon.path('app/root.log')) + sum(
        os.path.getsize(os.path.join(directory, name)) for name in names)
    assert total <= CAP
    kept = [backup_bodies(daemon, 'app/root.log', name)[0].split()[0] for name in names]
    assert 1 <= len(kept) < 6 and kept == [str(rotation) for rotation in range(6 - len(kept), 6)]
    assert stats['backups_deleted_total_size'] == 6 - len(kept)
