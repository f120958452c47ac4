"""The `loghog` client distribution: only the loghog package, standard library only.

    pip install ./client

The package lives at the top of the repository (loghogd imports it too), so
this file points setuptools at it rather than keeping a second copy.
"""

import os
import re

from setuptools import setup

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, 'loghog')


def read_version() -> str:
    with open(os.path.join(PACKAGE_DIR, '__init__.py'), encoding='utf-8') as init:
        return re.search(r"^__version__ = '([^']+)'", init.read(), re.M).group(1)


setup(
    name='loghog',
    version=read_version(),
    description='Python logging handler that ships records to a loghogd server over TCP, UDP or mutual TLS',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=['loghog'],
    package_dir={'loghog': os.path.relpath(PACKAGE_DIR)},
    install_requires=[],
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: System :: Logging',
    ],
)
