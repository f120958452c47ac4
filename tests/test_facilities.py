"""facilities.conf: sections to facilities, inheritance, safe names, lookup."""

import shlex
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.config import ConfigError
from loghogd.facilities import ROOT, load_facilities
from loghogd.hooks import parse_command
from loghogd.permissions import FILE_MODE_NEEDED, parse_mode
from loghogd.ratelimit import parse_rate
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
    'misspelled schedule name': ('[app]\nrotate = dayly\nbackup_count = 1\n', 2, 'app', 'rotate',
                                 'unknown schedule name, did you mean daily'),
    'bad file_mode': ('[app]\nrotate = daily\nbackup_count = 1\nfile_mode = 0648\n', 4, 'app', 'file_mode',
                      'octal mode'),
    'file_mode loghogd cannot write': ('[app]\nrotate = daily\nbackup_count = 1\nfile_mode = 0444\n', 4, 'app',
                                       'file_mode', 'loghogd needs'),
    'setuid dir_mode': ('[app]\nrotate = daily\nbackup_count = 1\ndir_mode = 4750\n', 4, 'app', 'dir_mode',
                        'permission bits only'),
    'dir_mode in a submodule': ('[app]\nrotate = daily\nbackup_count = 1\n[app:web]\nrotate = daily\n'
                                'backup_count = 1\ndir_mode = 0750\n', 7, 'app:web', 'dir_mode', "app's directory"),
    'unknown group': ('[app]\nrotate = daily\nbackup_count = 1\nfile_group = no-such-group-here\n', 4, 'app',
                      'file_group', "no group 'no-such-group-here'"),
    'bad rate_limit': ('[app]\nrotate = daily\nbackup_count = 1\nrate_limit = 100\n', 4, 'app', 'rate_limit',
                       'per second'),
    'zero rate_limit': ('[app]\nrotate = daily\nbackup_count = 1\nrate_limit = 0/s\n', 4, 'app', 'rate_limit',
                        'not a rate'),
    'unclosed quote in post_rotate': ('[app]\nrotate = daily\nbackup_count = 1\npost_rotate = upload "x\n', 4,
                                      'app', 'post_rotate', 'not a command line'),
    'bad post_rotate_timeout': ('[app]\nrotate = daily\nbackup_count = 1\npost_rotate_timeout = 0\n', 4, 'app',
                                'post_rotate_timeout', 'out of range'),
    'bad max_total_size': ('[app]\nrotate = daily\nbackup_count = 1\nmax_total_size = lots\n', 4, 'app',
                           'max_total_size', 'not a size'),
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


def test_every_mistake_is_listed_not_only_the_first(tmp_path: Path) -> None:
    text = ('[app]\nrotate = dayly\nbackup_count = 1\nfile_mode = 9\nsecrte = x\n'
            '[other]\nrotate = daily\nrate_limit = fast\n[third:web]\nrotate = daily\nbackup_count = 1\n')
    with pytest.raises(ConfigError) as raised:
        load_facilities(write(tmp_path, text))
    lines = str(raised.value).split('\n')
    where = {tuple(line.split(': ')[0].split(', ')[1:]) for line in lines}
    assert where == {('line 2', '[app] rotate'), ('line 4', '[app] file_mode'), ('line 5', '[app] secrte'),
                     ('line 6', '[other] backup_count'), ('line 8', '[other] rate_limit'), ('line 9', '[third:web]')}
    assert len(lines) == len(where)
    assert 'did you mean daily' in str(raised.value) and 'did you mean secret' in str(raised.value)


def test_operator_controls_are_typed_and_inherited(tmp_path: Path) -> None:
    text = ('[shop]\nrotate = daily\nbackup_count = 1\nfile_mode = 0644\ndir_mode = 750\nfile_group = 0\n'
            'post_rotate = /usr/bin/upload --to "a bucket"\npost_rotate_timeout = 30\nrate_limit = 200/s\n'
            'max_total_size = 1G\n[shop:web]\nrotate = daily\nbackup_count = 1\nrate_limit = 5 / s\n')
    root, web = load_facilities(write(tmp_path, text))
    assert (root.file_mode, root.dir_mode, root.file_group) == (0o644, 0o750, 0)
    assert root.post_rotate == ('/usr/bin/upload', '--to', 'a bucket') and root.post_rotate_timeout == 30.0
    assert (root.rate_limit, root.max_total_size) == (200.0, 1024 ** 3)
    assert (web.file_mode, web.dir_mode, web.post_rotate, web.max_total_size) == (
        root.file_mode, root.dir_mode, root.post_rotate, root.max_total_size)
    assert web.rate_limit == 5.0


@given(mode=st.integers(0, 0o7777), leading_zero=st.booleans())
def test_modes_are_permission_bits_with_what_loghogd_needs(mode: int, leading_zero: bool) -> None:
    text = ('0' if leading_zero else '') + format(mode, '03o')
    try:
        parsed = parse_mode(text, FILE_MODE_NEEDED)
    except ValueError:
        assert mode > 0o777 or mode & 0o600 != 0o600
    else:
        assert parsed == mode and mode <= 0o777 and mode & 0o600 == 0o600


@given(raw=st.text(max_size=12))
def test_rates_are_whole_records_per_second_or_a_value_error(raw: str) -> None:
    try:
        rate = parse_rate(raw)
    except ValueError:
        return
    assert rate >= 1 and rate == int(raw.split('/')[0])


@given(words=st.lists(st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\0'), min_size=1),
                      min_size=1, max_size=4))
def test_post_rotate_commands_keep_their_words_without_a_shell(words: list) -> None:
    assert parse_command(' '.join(shlex.quote(word) for word in words)) == tuple(words)


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
