"""Packaging facts that must agree across files: one version, two units, one .deb for Debian 12 and 13."""

import importlib.metadata
import re
from pathlib import Path

import loghog
import loghogd
from tests.support.daemon import REPO

TOP = Path(REPO)


def test_one_version_for_both_distributions_and_the_debian_package():
    changelog = (TOP / 'debian' / 'changelog').read_text().splitlines()[0]
    upstream = re.match(r'^loghogd \(([^-)]+)-[^)]+\) ', changelog).group(1)
    assert loghogd.__version__ == loghog.__version__ == upstream
    assert importlib.metadata.version('loghogd') == loghog.__version__
    for pyproject in (TOP / 'pyproject.toml', TOP / 'client' / 'pyproject.toml'):
        assert 'version = {attr = "loghog.__version__"}' in pyproject.read_text(), pyproject


def unit_lines(path: Path) -> list:
    return [line for line in path.read_text().splitlines() if not line.startswith('#')]


def test_the_unit_for_a_clone_is_the_packaged_unit_with_the_venv_loghogd():
    packaged = unit_lines(TOP / 'debian' / 'loghogd.service')
    clone = unit_lines(TOP / 'systemd' / 'loghogd.service')
    assert clone == [line.replace('/usr/sbin/loghogd', '/opt/loghogd/bin/loghogd') for line in packaged]


def test_msgspec_and_isal_are_recommended_so_that_the_same_deb_installs_on_debian_12():
    control = (TOP / 'debian' / 'control').read_text()
    fields = dict(re.findall(r'^(Depends|Recommends): ((?:.*\n(?: .*\n)*))', control, re.M))
    for package in ('python3-msgspec', 'python3-isal'):
        assert package in fields['Recommends']
        assert package not in fields['Depends']


def test_bootstrap_reinstalls_when_any_packaging_metadata_changes():
    bootstrap = (TOP / 'scripts' / 'bootstrap').read_text()
    stamp = next(line for line in bootstrap.splitlines() if line.startswith('stamp='))
    for name in ('pyproject.toml', 'setup.py', 'client/pyproject.toml'):
        assert ' %s' % name in stamp, stamp
