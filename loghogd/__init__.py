"""loghogd: the LogHog central log server."""

from loghog import __version__

__all__ = ['__version__']
