"""The option schema: the docs and man page say what it says, the loaders read exactly its keys."""

from pathlib import Path
from typing import List, Set, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd import schema, schemadocs
from loghogd.config import ServerConfig, load_config
from loghogd.facilities import Facility, load_facilities
from loghogd.schedule import parse_size
from loghogd.schema import FACILITIES_CONF, FACILITY, LOGHOGD_CONF, OPTIONS, Values
from loghogd.values import size_text

REPO = Path(__file__).resolve().parent.parent
FACILITIES = """
[app]
rotate = daily
backup_count = 1
[app:web]
rotate = daily
backup_count = 2
format = json
"""


@pytest.mark.parametrize('relative', [schemadocs.DOCS, schemadocs.MAN])
def test_docs_and_man_page_list_the_options_as_the_schema_gives_them(relative: Path) -> None:
    current, wanted = schemadocs.generated(REPO)[relative]
    assert current == wanted, 'run: python -m loghogd.schema --write-docs'


def test_every_option_is_in_the_docs_table_with_its_default() -> None:
    docs = (REPO / schemadocs.DOCS).read_text(encoding='utf-8')
    for option in OPTIONS:
        assert '| `%s` | %s |' % (option.name, schemadocs.shown_default(option)) in docs


def test_loaders_read_exactly_the_schemas_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: Set[Tuple[str, str, str]] = set()
    given_key, get_key = Values.given, Values.__getitem__

    def given_spy(self: Values, key: str) -> bool:
        read.add((self.file, self.section, key))
        return given_key(self, key)

    def get_spy(self: Values, key: str) -> object:
        read.add((self.file, self.section, key))
        return get_key(self, key)

    monkeypatch.setattr(Values, 'given', given_spy)
    monkeypatch.setattr(Values, '__getitem__', get_spy)
    # [forward] and [consume] are read only when present
    (tmp_path / 'loghogd.conf').write_text('[forward]\nnats_servers = n:4222\n[consume]\nnats_servers = n:4222\n',
                                           encoding='utf-8')
    (tmp_path / 'facilities.conf').write_text(FACILITIES, encoding='utf-8')
    config = load_config(str(tmp_path / 'loghogd.conf'))
    load_facilities(config.main.facilities_config, config.line_format)
    assert read == {(option.file, option.section, option.name) for option in OPTIONS}


def test_facility_fields_are_schema_keys() -> None:
    fields = set(Facility.__dataclass_fields__) - {'app_id', 'module', 'line_format'}
    assert fields <= set(schema.keys_of(FACILITIES_CONF, FACILITY))


def test_writing_each_default_gives_what_leaving_it_out_gives(tmp_path: Path) -> None:
    lines: List[str] = []
    for section in schema.sections(LOGHOGD_CONF):
        lines.append('[%s]' % section)
        lines += ['%s = %s' % (option.name, option.default) for option in OPTIONS
                  if (option.file, option.section) == (LOGHOGD_CONF, section) and not option.shown]
    (tmp_path / 'written.conf').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    (tmp_path / 'empty.conf').write_text('', encoding='utf-8')
    written = load_config(str(tmp_path / 'written.conf'))
    empty = load_config(str(tmp_path / 'empty.conf'))
    assert (written.main, written.log, written.compressor, written.server, written.stats, written.line_format) == (
        empty.main, empty.log, empty.compressor, empty.server, empty.stats, empty.line_format)


def test_the_frozen_objects_field_defaults_are_the_loaded_defaults(tmp_path: Path) -> None:
    (tmp_path / 'loghogd.conf').write_text('', encoding='utf-8')
    loaded = load_config(str(tmp_path / 'loghogd.conf')).server
    built = ServerConfig(listen=loaded.listen, listen_ssl=(), pemfile=None, cacert=None, crlfile=None)
    assert built == loaded


@given(st.sampled_from(OPTIONS), st.text(max_size=24))
@settings(max_examples=600)
def test_every_parser_returns_a_value_or_raises_value_error(option: schema.Option, raw: str) -> None:
    try:
        option.parse(raw)
    except ValueError:
        pass


@given(st.integers(min_value=0, max_value=2 ** 40))
def test_size_text_reads_back_as_the_same_size(size: int) -> None:
    text = size_text(size)
    assert text == '0' if size == 0 else parse_size(text) == size


def test_the_command_rewrites_a_stale_table_and_check_then_passes(tmp_path: Path) -> None:
    for relative in (schemadocs.DOCS, schemadocs.MAN):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        text = (REPO / relative).read_text(encoding='utf-8')
        (tmp_path / relative).write_text(text.replace('4096', '4095'), encoding='utf-8')
    assert schemadocs.main(['--root', str(tmp_path), '--check']) == 1
    assert schemadocs.main(['--root', str(tmp_path), '--write-docs']) == 0
    assert schemadocs.main(['--root', str(tmp_path), '--check']) == 0
    assert (tmp_path / schemadocs.DOCS).read_text(encoding='utf-8') == (REPO / schemadocs.DOCS).read_text(
        encoding='utf-8')
