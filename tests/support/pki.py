"""A private CA for tests, made by the commands operators use.

    pki = make_pki(tmp_path)                  # runs loghog-server-cert in tmp_path/pki
    pki.ca_cert, pki.ca_key, pki.crl          # the CA's files
    pki.server_pem                            # key + cert, CN localhost, SANs localhost/127.0.0.1/::1
    pki.client_pem('web1')                    # runs loghog-client-cert: path of web1.pem
    pki.revoke('web1')                        # runs loghog-client-cert --revoke: web1 is in pki.crl
    pki.other_ca_client_pem('web1')           # a client of a second, unrelated CA
    pki.expired_client_pem('web1')            # signed by this CA, expired yesterday

`Loghogd(directory, pki=pki)` serves TLS with `server_pem` and `ca_cert`;
add `config={'server': {'crlfile': pki.crl}}` to make it check revocations.

The commands are the console scripts next to `sys.executable` (how users meet
them); where they are not installed there (Debian's python3 running the
suite), the same entry points are called through `python -c`. The one thing
the commands cannot make is an expired certificate, so `expired_client_pem`
calls the library behind loghog-client-cert (`loghogd.castore`) with a
validity window in the past.
"""

import datetime
import os
import subprocess
import sys
from typing import Dict, List, Optional

from loghogd import castore, pki

COMMANDS = {'loghog-server-cert': 'server_cert_main', 'loghog-client-cert': 'client_cert_main'}
COMMAND_TIMEOUT = 120.0


def command_line(command: str, *arguments: str) -> List[str]:
    """How to run loghog-server-cert / loghog-client-cert with this Python."""
    script = os.path.join(os.path.dirname(sys.executable), command)
    if os.path.exists(script):
        return [script, *arguments]
    code = 'import sys; from loghogd.certs import %s as main; sys.exit(main())' % COMMANDS[command]
    return [sys.executable, '-c', code, *arguments]


def run_command(command: str, *arguments: str, check: bool = True, **options: object) -> subprocess.CompletedProcess:
    """Run a cert command; with `check`, a failure raises with its stderr."""
    result = subprocess.run(command_line(command, *arguments), capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, **options)
    if check and result.returncode != 0:
        raise AssertionError('%s %s failed (%d): %s' % (command, ' '.join(arguments), result.returncode,
                                                         result.stderr))
    return result


class Pki:
    """The files of one CA made by loghog-server-cert, and its clients."""

    def __init__(self, directory: str, use_rsa: bool = False) -> None:
        self.directory = directory
        self.use_rsa = use_rsa
        files = pki.CaFiles(directory, pki.DEFAULT_CA_NAME)
        self.ca_key = files.key
        self.ca_cert = files.cert
        self.crl = files.crl
        self.index = files.index
        self.server_pem = files.server_pem
        self.clients_dir = os.path.join(directory, 'clients')
        self._clients: Dict[str, str] = {}
        self._other: Optional['Pki'] = None

    def _create(self) -> 'Pki':
        arguments = ['--dir', self.directory, '--cn', 'localhost'] + (['--rsa'] if self.use_rsa else [])
        run_command('loghog-server-cert', *arguments)
        os.makedirs(self.clients_dir, exist_ok=True)
        return self

    def client_pem(self, name: str) -> str:
        """The pem file (key + cert) of client `name`, issued on first use."""
        if name not in self._clients:
            path = os.path.join(self.clients_dir, name + '.pem')
            run_command('loghog-client-cert', name, '--dir', self.directory, '--out', path,
                        *(['--rsa'] if self.use_rsa else []))
            self._clients[name] = path
        return self._clients[name]

    def revoke(self, name: str) -> None:
        """Put every certificate issued to `name` on the CRL."""
        run_command('loghog-client-cert', '--revoke', name, '--dir', self.directory)

    def other_ca_client_pem(self, name: str) -> str:
        """A client certificate from a second CA that this server does not trust."""
        if self._other is None:
            self._other = Pki(os.path.join(self.directory, 'other-ca'), self.use_rsa)._create()
        return self._other.client_pem(name)

    def expired_client_pem(self, name: str) -> str:
        """A client certificate of this CA whose validity ended a day ago."""
        path = os.path.join(self.clients_dir, name + '-expired.pem')
        if not os.path.exists(path):
            now = datetime.datetime.now(datetime.timezone.utc)
            ca = castore.load_ca(self.directory)
            key, cert = pki.issue_client_certificate(ca, name, now - datetime.timedelta(days=30),
                                                       now - datetime.timedelta(days=1), self.use_rsa)
            castore.write_file(path, pki.pem_bundle(key, cert), 0o600, replace=False)
        return path


def make_pki(directory: object, use_rsa: bool = False) -> Pki:
    """Run loghog-server-cert into `directory`/pki and return its files."""
    return Pki(os.path.join(str(directory), 'pki'), use_rsa)._create()
