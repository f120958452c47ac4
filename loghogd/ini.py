"""Strict INI reading with line numbers, located errors and plain value parsers.

Both loghogd.conf and facilities.conf are read here. configparser keeps no
line numbers, so a light scan of the same text records them; they only
decorate error messages, which name file, line, section and key.
"""

import configparser
import difflib
import os
import re
from typing import Callable, Dict, List, Optional, Tuple, TypeVar


class ConfigError(Exception):
    """A configuration file is wrong; the message is for the operator."""


_NO_DEFAULT_SECTION = '\0no default section'
_HEADER = re.compile(r'\[(?P<name>.+)\]')
_KEY = re.compile(r'(?P<key>[^=:]*?)\s*[=:]')
_INLINE_COMMENT = re.compile(r'\s[;#].*$')
_DIGITS = re.compile(r'[0-9]+')
_SECONDS = re.compile(r'[0-9]+(\.[0-9]+)?')

T = TypeVar('T')


class IniFile:
    """A strictly parsed INI file that remembers the line of each section and key."""

    def __init__(self, path: str, parser: configparser.ConfigParser, lines: Dict[Tuple[str, str], int]) -> None:
        self.path = path
        self.parser = parser
        self._lines = lines
        self.errors: List[ConfigError] = []
        """Mistakes noted while loading goes on to find the others (all_errors raises them together)."""

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)

    def line(self, section: str, key: str = '') -> Optional[int]:
        """Where `[section]` (key '') or its `key` was written, if known."""
        return self._lines.get((section, key))

    def error(self, section: str, key: str, message: str) -> ConfigError:
        """A ConfigError naming this file, the line, [section] and key."""
        return ConfigError(_located(self.path, self.line(section, key) or self.line(section), section, key, message))

    def check_keys(self, section: str, known: List[str]) -> None:
        """Unknown keys are typos that would silently do nothing: note each in `errors`."""
        for key in self.parser[section]:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = 'did you mean %s? ' % near[0] if near else ''
                self.errors.append(self.error(section, key, 'unknown key (%sknown keys: %s)'
                                              % (hint, ', '.join(known))))

    def noting(self) -> 'ErrorNote':
        """A block whose ConfigError is noted in `errors`, so that loading goes on to find the others."""
        return ErrorNote(self.errors)

    def raise_errors(self) -> None:
        """One ConfigError listing every mistake noted, one per line."""
        if self.errors:
            raise ConfigError('\n'.join(dict.fromkeys(str(error) for error in self.errors)))

    def convert(self, section: str, key: str, raw: str, converter: Callable[[str], T]) -> T:
        """converter(raw), its ValueError turned into a located ConfigError."""
        try:
            return converter(raw)
        except ValueError as error:
            raise self.error(section, key, str(error)) from None


class ErrorNote:
    """Context manager of IniFile.noting."""

    def __init__(self, errors: List[ConfigError]) -> None:
        self.errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: object, _traceback: object) -> bool:
        if isinstance(error, ConfigError):
            self.errors.append(error)
            return True
        return False


def _located(path: str, line: Optional[int], section: str, key: str, message: str) -> str:
    where = path if line is None else '%s, line %d' % (path, line)
    if section:
        where += ', [%s]%s' % (section, ' ' + key if key else '')
    return '%s: %s' % (where, message)


def read_ini(path: str) -> IniFile:
    """Parse `path` strictly: no interpolation, ';'/'#' comments, no duplicates.

    Every problem, from a missing file to a duplicate key, is a ConfigError.
    """
    path = os.path.abspath(path)
    try:
        with open(path, encoding='utf-8') as ini_file:
            text = ini_file.read()
    except FileNotFoundError:
        raise ConfigError('%s: no such file' % path) from None
    except UnicodeDecodeError as error:
        raise ConfigError('%s: not UTF-8 text (byte %d)' % (path, error.start)) from None
    except OSError as error:
        raise ConfigError('%s: cannot read: %s' % (path, error.strerror or error)) from None
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(';', '#'), comment_prefixes=(';', '#'),
        strict=True, empty_lines_in_values=False, default_section=_NO_DEFAULT_SECTION)
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as error:
        raise ConfigError(_located(path, error.lineno, error.section, '', 'section appears twice')) from None
    except configparser.DuplicateOptionError as error:
        raise ConfigError(_located(path, error.lineno, error.section, error.option,
                                   'key appears twice in this section')) from None
    except configparser.MissingSectionHeaderError as error:
        raise ConfigError(_located(path, error.lineno, '', '',
                                   '%r comes before any [section] header' % error.line.strip())) from None
    except configparser.ParsingError as error:
        lineno = error.errors[0][0]
        lines = text.split('\n')
        line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ''
        raise ConfigError(_located(path, lineno, '', '', 'cannot parse %r: expected [section], '
                                   'key = value or a comment' % line)) from None
    except configparser.Error as error:
        raise ConfigError('%s: %s' % (path, error)) from None
    return IniFile(path, parser, _scan_lines(text, parser.optionxform))


def _scan_lines(text: str, optionxform: Callable[[str], str]) -> Dict[Tuple[str, str], int]:
    """(section, key) -> line number; key '' is the section header's line."""
    lines: Dict[Tuple[str, str], int] = {}
    section = ''
    for number, line in enumerate(text.split('\n'), start=1):
        stripped = _INLINE_COMMENT.sub('', line.strip())
        if not stripped or stripped[0] in ';#' or (line[:1].isspace() and section):
            continue
        header = _HEADER.match(stripped)
        if header:
            section = header.group('name')
            lines.setdefault((section, ''), number)
            continue
        key = _KEY.match(stripped)
        if key and section:
            lines.setdefault((section, optionxform(key.group('key').strip())), number)
    return lines


def resolve_path(directory: str, raw: str) -> Optional[str]:
    """`raw` made absolute against `directory`; None for an empty value."""
    if not raw:
        return None
    if '\0' in raw or '\n' in raw:
        raise ValueError('%r is not a usable path' % raw)
    return os.path.normpath(os.path.join(directory, raw))


def parse_bool(raw: str) -> bool:
    """yes/no, true/false, on/off or 1/0, as configparser spells booleans."""
    try:
        return configparser.ConfigParser.BOOLEAN_STATES[raw.lower()]
    except KeyError:
        raise ValueError('%r is not yes or no' % raw) from None


def parse_int(raw: str, low: int, high: Optional[int] = None) -> int:
    """A plain decimal integer in [low, high]."""
    if not _DIGITS.fullmatch(raw):
        raise ValueError('%r is not a whole number' % raw)
    return check_range(int(raw), low, high)


def check_range(number: int, low: int, high: Optional[int] = None) -> int:
    """`number` if it is in [low, high], else a ValueError that gives the range."""
    if number < low or (high is not None and number > high):
        bound = 'at least %d' % low if high is None else 'from %d to %d' % (low, high)
        raise ValueError('%d is out of range: must be %s' % (number, bound))
    return number


def parse_seconds(raw: str, low: float, high: float) -> float:
    """Seconds as a plain decimal number (`5`, `0.5`) in [low, high]."""
    if not _SECONDS.fullmatch(raw):
        raise ValueError('%r is not a number of seconds' % raw)
    seconds = float(raw)
    if not low <= seconds <= high:
        raise ValueError('%s is out of range: must be from %g to %g seconds' % (raw, low, high))
    return seconds


def parse_port(raw: str) -> int:
    """0-65535; 0 lets the kernel choose a free port."""
    if not _DIGITS.fullmatch(raw) or int(raw) > 65535:
        raise ValueError('%r is not a port number (0-65535)' % raw)
    return int(raw)
