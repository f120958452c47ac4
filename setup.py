"""loghogd, the LogHog central log server, and its shared wire protocol."""

from setuptools import setup

from loghogd import __version__

setup(
    name='loghogd',
    version=__version__,
    description='Central log server: one writer per file, rotation, compression, mutual TLS',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=['loghogd', 'loghog'],
    install_requires=[
        'croniter>=1.3.5',
        'cryptography>=38',
        'lockfile>=0.12.2',
        'python-daemon>=2.3.2',
        'python-dateutil>=2.8.2',
    ],
    extras_require={'fast': ['msgspec>=0.18'], 'test': ['pytest>=7', 'hypothesis>=6', 'msgspec>=0.18']},
    entry_points={'console_scripts': [
        'loghogd = loghogd.main:main',
        'loghog-server-cert = loghogd.certs:server_cert_main',
        'loghog-client-cert = loghogd.certs:client_cert_main',
    ]},
    data_files=[('share/man/man8', ['man/loghogd.8', 'man/loghog-server-cert.8', 'man/loghog-client-cert.8'])],
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Operating System :: POSIX',
        'Programming Language :: Python :: 3',
        'Topic :: System :: Logging',
    ],
)
