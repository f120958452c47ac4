"""Only the man pages: every other fact about the distribution is in pyproject.toml."""

from setuptools import setup

setup(data_files=[('share/man/man8', ['man/loghogd.8', 'man/loghog-server-cert.8', 'man/loghog-client-cert.8'])])
