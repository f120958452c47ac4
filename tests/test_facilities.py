"""facilities.conf: sections to facilities, inheritance, safe names, lookup."""

from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.config import ConfigError
from loghogd.facilities import ROOT, load_facilities
from loghogd.schedule import parse_rotate

REPO = Path(__file__).resolve().parent.parent


def write(directory: Path, text: str) -> str:
    path = directory / 'facilities.conf'
    path.write_text(text, encoding='utf-8')
    return str(path)


def test_empty_file_has_no_facilities(tmp_path: Path) -> None:
    facilities = load_facilities(write(tmp_path, '; nothing yet\n'))
    assert len(facilities) == 0
    assert facilities.lookup('any', ROOT) is None


def test_shipped_sample_loads_with_my_first_app() -> None:
    facilities = load_facilities(str(REPO / 'conf' / 'facilities.conf'))
    facility = facilities.lookup('my-first-app', 'web.requests')
    assert (facility.app_id, facility.module) == ('my-first-app', ROOT)
    assert (facility.rotate, facility.backup_count) == (parse_rotate('daily'), 14)


def test_root_and_submodule_spellings(tmp_path: Path) -> None:
    facilities = load_facilities(write(tmp_path, """
[a]
rotate = daily
backup_count = 1
[b:]
rotate = hourly
backup_count = 2
[c:root]
rotate = weekly
backup_count = 3
[a:web.requests]
rotate = monthly
backup_count = 4
[a:root.cron]
rotate = 0 3 * * *
backup_count = 5
"""))
    assert sorted(facility.name for facility in facilities) == [
        'a:cron', 'a:root', 'a:web.requests', 'b:root', 'c:root']
    assert facilities.lookup('a', 'cron.nightly').rotate == parse_rotate('0 3 * * *')
    assert facilities.lookup('a', 'root.web.requests.slow').backup_count == 4
    assert facilities.lookup('a', 'web').module == ROOT
    assert facilities.lookup('b', 'x').backup_count == 2
    assert facilities.lookup('z', ROOT) is None


def test_defaults_and_typed_values(tmp_path: Path) -> None:
    facilities = load_facilities(write(tmp_path, """
[plain]
rotate = daily
backup_count = 7
[full]
rotate = SIZE ; comment
backup_count = 3
max_size = 10M
max_age = 30d
flush_every = 50
file_per_host = yes
secret = s3cret # comment
sync = true
"""))
    plain = facilities.lookup('plain', ROOT)
    assert (plain.max_size, plain.max_age, plain.flush_every) == (None, None, 1)
    assert (plain.file_per_host, plain.secret, plain.sync, plain.max_hosts) == (False, None, False, 10000)
    full = facilities.lookup('full', ROOT)
    assert full.rotate.size_only
    assert (full.max_size, full.max_age, full.flush_every) == (10 * 1024 ** 2, 30 * 86400.0, 50)
    assert (full.file_per_host, full.secret, full.sync) == (True, 's3cret', True)


def test_submodules_inherit_from_root_unless_they_say_otherwise(tmp_path: Path) -> None:
    facilities = load_facilities(write(tmp_path, """
[app]
rotate = daily
backup_count = 3
max_size = 1000
max_age = 12h
flush_every = 5
file_per_host = yes
secret = root-secret
sync = yes
max_hosts = 50
[app:cron]
rotate = size
backup_count = 9
[app:web]
rotate = hourly
backup_count = 2
max_size = 2000
max_age =
flush_every = 1
file_per_host = no
secret =
sync = no
max_hosts = 7
"""))
    cron = facilities.lookup('app', 'cron')
    assert (cron.rotate.size_only, cron.backup_count) == (True, 9)
    assert (cron.max_size, cron.max_age, cron.flush_every) == (1000, 43200.0, 5)
    assert (cron.file_per_host, cron.secret, cron.sync, cron.max_hosts) == (True, 'root-secret', True, 50)
    web = facilities.lookup('app', 'web')
    assert (web.max_size, web.max_age, web.flush_every) == (2000, None, 1)
    assert (web.file_per_host, web.secret, web.sync, web.max_hosts) == (False, None, False, 7)


def test_reloading_the_same_file_gives_equal_facilities(tmp_path: Path) -> None:
    path = write(tmp_path, '[app]\nrotate = midnight\nbackup_count = 3\nsecret = x\n')
    first = list(load_facilities(path))
    path = write(tmp_path, '[app:]\nrotate = Daily\nbackup_count = 3\nsecret = x\n')
    assert list(load_facilities(path)) == first
    assert len(set(first)) == 1


# One case per kind of mistake: (file text, line, section, key, words the message must hold)
ERRORS = {
    'missing rotate': ('[app]\nbackup_count = 1\n', 1, 'app', 'rotate', 'required'),
    'missing backup_count': ('[a]\nrotate = daily\nbackup_count = 1\n[app]\nrotate = daily\n', 4, 'app',
                             'backup_count', 'required'),
    'bad rotate': ('[app]\nrotate = fortnightly\nbackup_count = 1\n', 2, 'app', 'rotate', 'fortnightly'),
    'reboot': ('[app]\nrotate = @reboot\nbackup_count = 1\n', 2, 'app', 'rotate', '@reboot'),
    'cron with 4 fields': ('[app]\nbackup_count = 1\nrotate = */15 * * *\n', 3, 'app', 'rotate', '5 fields'),
    'cron out of range': ('[app]\nbackup_count = 1\nrotate = 0 25 * * *\n', 3, 'app', 'rotate', 'out of range'),
    'size without max_size': ('[app]\nrotate = size\nbackup_count = 1\n', 2, 'app', 'rotate', 'max_size'),
    'bad backup_count': ('[app]\nrotate = daily\nbackup_count = many\n', 3, 'app', 'backup_count',
                         'whole number'),
    'bad max_size': ('[app]\nrotate = daily\nbackup_count = 1\nmax_size = 10 MB\n', 4, 'app', 'max_size',
                     'not a size'),
    'bad max_age': ('[app]\nrotate = daily\nbackup_count = 1\nmax_age = 30\n', 4, 'app', 'max_age', 'unit'),
    'zero flush_every': ('[app]\nrotate = daily\nbackup_count = 1\nflush_every = 0\n', 4, 'app', 'flush_every',
                         'at least 1'),
    'bad file_per_host': ('[app]\nrotate = daily\nbackup_count = 1\nfile_per_host = sometimes\n', 4, 'app',
                          'file_per_host', 'yes or no'),
    'bad sync': ('[app]\nrotate = daily\nbackup_count = 1\nsync = 2\n', 4, 'app', 'sync', 'yes or no'),
    'zero max_hosts': ('[app]\nrotate = daily\nbackup_count = 1\nmax_hosts = 0\n', 4, 'app', 'max_hosts',
                       'at least 1'),
    'unknown key': ('[app]\nrotate = daily\nbackup_count = 1\nsecrte = x\n', 4, 'app', 'secrte', 'unknown key'),
    'submodule without root': ('[app]\nrotate = daily\nbackup_count = 1\n[other:web]\nrotate = daily\n'
                               'backup_count = 1\n', 4, 'other:web', '', 'no root facility'),
    'root twice': ('[app]\nrotate = daily\nbackup_count = 1\n[app:]\nrotate = daily\nbackup_count = 1\n', 4,
                   'app:', '', 'same facility as [app]'),
    'submodule twice': ('[app]\nrotate = daily\nbackup_count = 1\n[app:web]\nrotate = daily\nbackup_count = 1\n'
                        '[app:root.web]\nrotate = daily\nbackup_count = 1\n', 7, 'app:root.web', '', 'same facility'),
    'dot-dot app': ('[..]\nrotate = daily\nbackup_count = 1\n', 1, '..', '', 'application id'),
    'slash in app': ('[a/b]\nrotate = daily\nbackup_count = 1\n', 1, 'a/b', '', 'application id'),
    'dot-dot module': ('[app]\nrotate = daily\nbackup_count = 1\n[app:web/../../x]\n', 4, 'app:web/../../x', '',
                       'module part'),
    'empty module part': ('[app]\nrotate = daily\nbackup_count = 1\n[app:web..x]\n', 4, 'app:web..x', '', 'empty'),
    'hidden module': ('[app]\nrotate = daily\nbackup_count = 1\n[app:.web]\n', 4, 'app:.web', '', 'empty'),
    'long app id': ('[%s]\nrotate = daily\nbackup_count = 1\n' % ('a' * 129), 1, 'a' * 129, '', 'longer than 128'),
    'app id ending in .log': ('[loghogd.log]\nrotate = daily\nbackup_count = 1\n', 1, 'loghogd.log', '',
                              "daemon's own log"),
    'duplicate key': ('[app]\nrotate = daily\nrotate = hourly\n', 3, 'app', 'rotate', 'twice'),
    'duplicate section': ('[app]\nrotate = daily\nbackup_count = 1\n[app]\n', 4, 'app', '', 'twice'),
}


@pytest.mark.parametrize('name', sorted(ERRORS))
def test_each_mistake_names_file_line_section_and_key(tmp_path: Path, name: str) -> None:
    text, line, section, key, words = ERRORS[name]
    with pytest.raises(ConfigError) as raised:
        load_facilities(write(tmp_path, text))
    message = str(raised.value)
    assert message.startswith('%s, line %d, ' % (tmp_path / 'facilities.conf', line)), message
    assert ('[%s] %s:' % (section, key) if key else '[%s]:' % section) in message, message
    assert words in message, message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='no such file'):
        load_facilities(str(tmp_path / 'facilities.conf'))


NAME = st.from_regex(r'[a-z0-9_-][a-z0-9_-]{0,6}', fullmatch=True).filter(lambda part: part != ROOT)
MODULE = st.lists(NAME, min_size=1, max_size=4).map('.'.join)


def most_specific(configured: set, module: str) -> str:
    """The oracle: the longest configured dotted prefix of module, else root."""
    parts = module.split('.')
    for length in range(len(parts), 0, -1):
        candidate = '.'.join(parts[:length])
        if candidate in configured:
            return candidate
    return ROOT


@given(configured=st.sets(MODULE, max_size=8), queries=st.lists(MODULE, max_size=10),
       root_prefix=st.booleans())
@settings(max_examples=150)
def test_lookup_returns_the_most_specific_configured_facility(tmp_path: Path, configured: set, queries: list,
                                                              root_prefix: bool) -> None:
    sections = ['[app]\nrotate = daily\nbackup_count = 0\n']
    for number, module in enumerate(sorted(configured), start=1):
        name = 'root.' + module if root_prefix else module
        sections.append('[app:%s]\nrotate = hourly\nbackup_count = %d\n' % (name, number))
    facilities = load_facilities(write(tmp_path, ''.join(sections)))
    assert len(facilities) == len(configured) + 1
    # Also ask for prefixes and extensions of what is configured.
    for module in queries + [m + '.x' for m in configured] + list(configured):
        expected = most_specific(configured, module)
        assert facilities.lookup('app', module).module == expected
        assert facilities.lookup('app', 'root.' + module).module == expected
    assert facilities.lookup('other', ROOT) is None


@given(section=st.text(max_size=20), key=st.text(max_size=12), value=st.text(max_size=20))
@settings(max_examples=300)
def test_generated_sections_load_or_raise_config_error(tmp_path: Path, section: str, key: str, value: str) -> None:
    text = '[%s]\nrotate = daily\nbackup_count = 1\n%s = %s\n' % (section, key, value)
    path = tmp_path / 'facilities.conf'
    path.write_text(text, encoding='utf-8', errors='surrogatepass')
    try:
        load_facilities(str(path))
    except ConfigError as error:
        assert str(path) in str(error)


def facility_or_none(text: str, tmp_path: Path) -> Optional[object]:
    try:
        return load_facilities(write(tmp_path, text))
    except ConfigError:
        return None


@given(app=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=140))
@settings(max_examples=300)
def test_only_safe_file_names_become_application_ids(tmp_path: Path, app: str) -> None:
    facilities = facility_or_none('[%s]\nrotate = daily\nbackup_count = 1\n' % app, tmp_path)
    if facilities is not None:
        (facility,) = list(facilities)
        assert facility.app_id not in ('.', '..') and not facility.app_id.startswith('.')
        assert '/' not in facility.app_id and len(facility.app_id) <= 128
        assert all(char.isalnum() or char in '._-' for char in facility.app_id)
