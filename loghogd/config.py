"""loghogd.conf: defaults, types and validation, turned into frozen objects.

Every error names the file, the section, the key and (where configparser
knows it) the line, so that an operator can fix it without guessing.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

from loghog.protocol import DEFAULT_MAX_MESSAGE_SIZE


class ConfigError(Exception):
    """A configuration file is wrong; the message is for the operator."""


@dataclass(frozen=True)
class ListenAddress:
    """One address to listen on; port 0 asks the kernel for a free one."""
    host: str
    port: int


@dataclass(frozen=True)
class MainConfig:
    daemon: bool
    workdir: str
    logdir: str
    rundir: str
    facilities_config: str
    pidfile: str
    user: Optional[str]


@dataclass(frozen=True)
class LogConfig:
    """The daemon's own log: None filename means stderr only."""
    filename: Optional[str]
    backup_count: int
    when: str
    level: int


@dataclass(frozen=True)
class CompressorConfig:
    format: str
    level: int


@dataclass(frozen=True)
class ServerConfig:
    listen: Tuple[ListenAddress, ...]
    listen_ssl: Tuple[ListenAddress, ...]
    pemfile: Optional[str]
    cacert: Optional[str]
    crlfile: Optional[str]
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_connections: int = 4096
    udp_receive_buffer: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class StatsConfig:
    prometheus_textfile: Optional[str] = None


@dataclass(frozen=True)
class Config:
    path: str
    main: MainConfig
    log: LogConfig
    compressor: CompressorConfig
    server: ServerConfig
    stats: StatsConfig = field(default_factory=StatsConfig)
