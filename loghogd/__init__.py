"""loghogd: the LogHog central log server."""

__version__ = '1.0.0'
