"""loghog: ship Python logging records to a loghogd server."""

from loghog.handler import LoghogHandler

__version__ = '1.0.0'
__all__ = ['LoghogHandler']
