"""loghog-server-cert and loghog-client-cert, run as commands, checked with
cryptography, the openssl binary and Python's ssl module."""

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from typing import Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loghogd import pki as ca_library
from tests.support.pki import command_line, make_pki, run_command

OPENSSL = shutil.which('openssl')
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason='the openssl binary is not installed')
NOW = datetime.datetime.now(datetime.timezone.utc)


def load_cert(path: str) -> x509.Certificate:
    return ca_library.load_certificate(path, 'certificate')


def read_bytes(path: str) -> bytes:
    with open(path, 'rb') as stream:
        return stream.read()


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def extension(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def openssl_verify(pki, pem: str, crl: bool = False) -> subprocess.CompletedProcess:
    arguments = [OPENSSL, 'verify', '-CAfile', pki.ca_cert]
    if crl:
        arguments += ['-crl_check', '-CRLfile', pki.crl]
    return subprocess.run(arguments + [pem], capture_output=True, text=True, timeout=30)


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


# ---------------------------------------------------------------- server cert

def test_server_cert_writes_private_files_whatever_the_callers_umask(tmp_path):
    directory = str(tmp_path / 'certs')
    result = run_command('loghog-server-cert', '--dir', directory, '--cn', 'localhost', umask=0)
    files = ca_library.CaFiles(directory, 'loghog')
    assert {path: mode(path) for path in (files.key, files.cert, files.crl, files.index, files.server_pem)} == {
        files.key: 0o600, files.cert: 0o644, files.crl: 0o644, files.index: 0o600, files.server_pem: 0o600}
    assert files.key in result.stdout and files.server_pem in result.stdout
    assert not [name for name in os.listdir(directory) if name.endswith('.tmp')]


def test_ca_is_a_ca_that_signs_certificates_and_crls_only(pki):
    ca = load_cert(pki.ca_cert)
    constraints = extension(ca, x509.BasicConstraints)
    usage = extension(ca, x509.KeyUsage)
    assert constraints.critical and constraints.value.ca
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = extension(ca, x509.SubjectKeyIdentifier).value
    assert extension(ca, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert ca.issuer == ca.subject
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == 'secp256r1'
    assert ca.signature_hash_algorithm.name == 'sha256'


def test_default_validity_is_a_century_starting_in_the_past(pki):
    ca = load_cert(pki.ca_cert)
    not_before = ca.not_valid_before_utc if hasattr(ca, 'not_valid_before_utc') else \
        ca.not_valid_before.replace(tzinfo=datetime.timezone.utc)
    assert not_before < NOW - datetime.timedelta(hours=12)
    assert ca_library.not_valid_after(ca) - NOW > datetime.timedelta(days=ca_library.DEFAULT_DAYS - 2)


def test_server_cert_is_for_server_auth_with_local_sans(pki):
    server = load_cert(pki.server_pem)
    assert extension(server, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert not extension(server, x509.BasicConstraints).value.ca
    san = extension(server, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ['localhost']
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address('127.0.0.1'),
                                                             ipaddress.ip_address('::1')}
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == 'localhost'
    assert server.issuer == load_cert(pki.ca_cert).subject


def test_server_cert_defaults_to_this_hosts_fqdn_and_takes_extra_names(tmp_path):
    run_command('loghog-server-cert', '--dir', str(tmp_path), '--san', 'logs.example.com', '--san', '10.1.2.3')
    san = extension(load_cert(str(tmp_path / 'loghog-server.pem')), x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.DNSName)
    assert socket.getfqdn() in names and 'logs.example.com' in names and 'localhost' in names
    assert ipaddress.ip_address('10.1.2.3') in san.get_values_for_type(x509.IPAddress)


def test_server_cert_refuses_to_overwrite_without_force(pki):
    before = {path: read_bytes(path) for path in (pki.ca_key, pki.ca_cert, pki.server_pem)}
    result = run_command('loghog-server-cert', '--dir', pki.directory, '--cn', 'localhost', check=False)
    assert result.returncode == 1
    assert result.stderr.startswith('loghog-server-cert: refusing to overwrite ')
    assert pki.ca_key in result.stderr and '--force' in result.stderr
    assert {path: read_bytes(path) for path in before} == before

    run_command('loghog-server-cert', '--dir', pki.directory, '--cn', 'localhost', '--force')
    assert all(read_bytes(path) != data for path, data in before.items())
    assert (mode(pki.ca_key), mode(pki.ca_cert), mode(pki.server_pem)) == (0o600, 0o644, 0o600)


def test_server_cert_refuses_when_only_one_file_exists(tmp_path):
    (tmp_path / 'loghog-ca.crl').write_bytes(b'keep me')
    result = run_command('loghog-server-cert', '--dir', str(tmp_path), '--cn', 'localhost', check=False)
    assert result.returncode == 1 and 'loghog-ca.crl' in result.stderr
    assert os.listdir(str(tmp_path)) == ['loghog-ca.crl']


def test_rsa_option_makes_rsa_3072_keys_throughout(tmp_path):
    pki = make_pki(tmp_path, use_rsa=True)
    for path in (pki.ca_cert, pki.server_pem, pki.client_pem('rsa-client')):
        key = load_cert(path).public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    assert extension(load_cert(pki.server_pem), x509.KeyUsage).value.key_encipherment
    if OPENSSL:
        assert openssl_verify(pki, pki.client_pem('rsa-client'), crl=True).returncode == 0


@pytest.mark.parametrize('days, message', [('0', 'at least 1'), ('-5', 'at least 1'), ('ten', 'whole number')])
def test_days_must_be_a_positive_number(tmp_path, days, message):
    result = run_command('loghog-server-cert', '--dir', str(tmp_path), '--days', days, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert os.listdir(str(tmp_path)) == []


def test_days_past_year_9999_is_refused(tmp_path):
    result = run_command('loghog-server-cert', '--dir', str(tmp_path), '--days', '3000000', check=False)
    assert result.returncode == 1 and '9999-12-31' in result.stderr


# ---------------------------------------------------------------- client cert

def test_client_pem_is_key_then_cert_for_client_auth(pki, tmp_path):
    workdir = tmp_path / 'cwd'
    workdir.mkdir()
    result = run_command('loghog-client-cert', 'web1', '--dir', pki.directory, cwd=str(workdir), umask=0)
    pem = str(workdir / 'web1.pem')
    assert mode(pem) == 0o600 and 'web1.pem' in result.stdout
    data = read_bytes(pem)
    assert data.startswith(b'-----BEGIN PRIVATE KEY-----') and b'-----BEGIN CERTIFICATE-----' in data
    client = load_cert(pem)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == 'web1'
    assert extension(client, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert not extension(client, x509.BasicConstraints).value.ca
    assert client.issuer == load_cert(pki.ca_cert).subject
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(pem, pem)   # what the 0.7 client does


def test_client_validity_follows_days_but_never_outlives_the_ca(pki):
    short = load_cert(run_client(pki, 'short', '--days', '10'))
    assert abs(ca_library.not_valid_after(short) - NOW - datetime.timedelta(days=10)) < datetime.timedelta(hours=1)
    long = load_cert(run_client(pki, 'long', '--days', str(ca_library.DEFAULT_DAYS + 1000)))
    assert ca_library.not_valid_after(long) == ca_library.not_valid_after(load_cert(pki.ca_cert))


def run_client(pki, name: str, *arguments: str) -> str:
    path = os.path.join(pki.clients_dir, name + '.pem')
    run_command('loghog-client-cert', name, '--dir', pki.directory, '--out', path, *arguments)
    return path


@needs_openssl
def test_openssl_verifies_server_and_client_against_the_ca(pki):
    for pem in (pki.server_pem, pki.client_pem('web1')):
        result = openssl_verify(pki, pem, crl=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(': OK')


def test_client_refuses_to_overwrite_without_force(pki):
    pem = pki.client_pem('web1')
    before = read_bytes(pem)
    result = run_command('loghog-client-cert', 'web1', '--dir', pki.directory, '--out', pem, check=False)
    assert result.returncode == 1 and 'refusing to overwrite %s' % pem in result.stderr
    assert read_bytes(pem) == before
    run_command('loghog-client-cert', 'web1', '--dir', pki.directory, '--out', pem, '--force')
    assert read_bytes(pem) != before and mode(pem) == 0o600


def test_missing_ca_is_an_error_naming_the_path(tmp_path):
    result = run_command('loghog-client-cert', 'web1', '--dir', str(tmp_path), cwd=str(tmp_path), check=False)
    assert result.returncode == 1
    assert result.stderr == 'loghog-client-cert: the CA key %s does not exist\n' % (tmp_path / 'loghog-ca.key')
    assert os.listdir(str(tmp_path)) == []


def test_missing_ca_cert_is_an_error_naming_the_path(pki, tmp_path):
    os.unlink(pki.ca_cert)
    result = run_command('loghog-client-cert', 'web1', '--dir', pki.directory, cwd=str(tmp_path), check=False)
    assert result.returncode == 1 and pki.ca_cert in result.stderr and 'does not exist' in result.stderr


def test_unreadable_ca_key_is_an_error_naming_the_path(pki):
    os.chmod(pki.ca_key, 0)
    command = command_line('loghog-client-cert', 'web1', '--dir', pki.directory, '--out', os.devnull)
    if os.geteuid() == 0:
        if shutil.which('setpriv') is None:
            pytest.skip('root reads any file, and setpriv (to drop that power) is not installed')
        command = ['setpriv', '--bounding-set', '-dac_override,-dac_read_search'] + command
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ('loghog-client-cert: cannot read the CA key %s: permission denied (run as root?)\n'
                             % pki.ca_key)


def test_ca_key_of_another_ca_is_refused(pki, tmp_path):
    other = make_pki(tmp_path / 'other')
    shutil.copy(other.ca_key, pki.ca_key)
    result = run_command('loghog-client-cert', 'web1', '--dir', pki.directory, cwd=str(tmp_path), check=False)
    assert result.returncode == 1 and 'does not belong to the CA certificate' in result.stderr


@pytest.mark.parametrize('name', ['', 'a/b', '..', 'x' * 65, 'tab\there'])
def test_bad_client_names_are_refused(pki, tmp_path, name):
    result = run_command('loghog-client-cert', name, '--dir', pki.directory, cwd=str(tmp_path), check=False)
    assert result.returncode == 1 and result.stderr.startswith('loghog-client-cert: client name')
    assert os.listdir(str(tmp_path)) == ['pki']


def test_index_records_every_certificate_issued_to_a_name(pki):
    first = load_cert(pki.client_pem('web1'))
    second = load_cert(run_client(pki, 'web1', '--force'))
    with open(pki.index, encoding='utf-8') as stream:
        issued = json.load(stream)['clients']['web1']
    assert [entry['serial'] for entry in issued] == [ca_library.serial_hex(first.serial_number),
                                                     ca_library.serial_hex(second.serial_number)]
    assert mode(pki.index) == 0o600


# ---------------------------------------------------------------- revocation

def read_crl(pki) -> x509.CertificateRevocationList:
    with open(pki.crl, 'rb') as stream:
        return x509.load_pem_x509_crl(stream.read())


def test_a_new_ca_has_an_empty_crl_signed_by_it(pki):
    crl = read_crl(pki)
    assert len(crl) == 0
    assert crl.is_signature_valid(load_cert(pki.ca_cert).public_key())
    assert crl.issuer == load_cert(pki.ca_cert).subject


def test_revoke_puts_the_clients_serial_on_the_crl(pki):
    serial = load_cert(pki.client_pem('web1')).serial_number
    kept = load_cert(pki.client_pem('web2')).serial_number
    pki.revoke('web1')
    crl = read_crl(pki)
    assert [entry.serial_number for entry in crl] == [serial]
    assert crl.get_revoked_certificate_by_serial_number(kept) is None
    assert crl.is_signature_valid(load_cert(pki.ca_cert).public_key())
    assert crl.signature_hash_algorithm.name == 'sha256'
    assert extension(crl, x509.CRLNumber).value.crl_number == 2
    next_update = crl.next_update_utc if hasattr(crl, 'next_update_utc') else crl.next_update
    assert next_update.year > NOW.year + 50
    assert mode(pki.crl) == 0o644


def test_revoking_twice_changes_nothing(pki):
    pki.client_pem('web1')
    pki.revoke('web1')
    before = read_bytes(pki.crl)
    result = run_command('loghog-client-cert', '--revoke', 'web1', '--dir', pki.directory)
    assert 'already revoked' in result.stdout
    assert read_bytes(pki.crl) == before


def test_revoke_covers_every_certificate_issued_to_the_name(pki):
    first = load_cert(pki.client_pem('web1')).serial_number
    second = load_cert(run_client(pki, 'web1', '--force')).serial_number
    pki.revoke('web1')
    assert {entry.serial_number for entry in read_crl(pki)} == {first, second}


def test_revoke_by_certificate_file(pki):
    pem = pki.client_pem('web1')
    os.unlink(pki.index)
    run_command('loghog-client-cert', '--revoke', 'web1', '--cert', pem, '--dir', pki.directory)
    assert [entry.serial_number for entry in read_crl(pki)] == [load_cert(pem).serial_number]


def test_revoke_refuses_a_certificate_of_another_ca(pki):
    result = run_command('loghog-client-cert', '--revoke', 'web1', '--cert', pki.other_ca_client_pem('web1'),
                         '--dir', pki.directory, check=False)
    assert result.returncode == 1 and 'was not issued by the CA' in result.stderr
    assert len(read_crl(pki)) == 0


def test_revoke_of_an_unknown_name_is_an_error(pki):
    result = run_command('loghog-client-cert', '--revoke', 'nobody-here', '--dir', pki.directory, check=False)
    assert result.returncode == 1 and "no certificate issued to 'nobody-here'" in result.stderr


@needs_openssl
def test_openssl_rejects_the_revoked_client_only(pki):
    revoked, kept = pki.client_pem('web1'), pki.client_pem('web2')
    pki.revoke('web1')
    result = openssl_verify(pki, revoked, crl=True)
    assert result.returncode != 0 and 'certificate revoked' in result.stdout + result.stderr
    assert openssl_verify(pki, kept, crl=True).returncode == 0


# ---------------------------------------------------------------- Python ssl

def server_context(pki, crl: bool = False) -> ssl.SSLContext:
    """What loghogd builds: mutual TLS against the CA, no session tickets."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    context.num_tickets = 0
    context.load_cert_chain(pki.server_pem)
    context.load_verify_locations(pki.ca_cert)
    if crl:
        context.load_verify_locations(pki.crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def client_context(pki, pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.ca_cert)
    context.load_cert_chain(pem, pem)
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str = 'localhost'
              ) -> Tuple[Optional[bytes], Optional[Exception]]:
    """One connection over 127.0.0.1: (what the server read, or None; the server's error, or None)."""
    outcome: dict = {}
    with socket.create_server(('127.0.0.1', 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                sock, _ = listener.accept()
                with server.wrap_socket(sock, server_side=True) as tls:
                    tls.settimeout(10)
                    outcome['data'] = tls.recv(100)
            except (OSError, ssl.SSLError) as error:
                outcome['error'] = error

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client.wrap_socket(raw, server_hostname=server_hostname) as tls:
                    tls.sendall(b'hello')
                    tls.recv(1)   # the server's verdict: EOF, or an alert when it refused us
        except (OSError, ssl.SSLError):
            pass   # a refused client; the server's error says why
        finally:
            thread.join(15)
    assert not thread.is_alive()
    return outcome.get('data'), outcome.get('error')


@pytest.mark.parametrize('server_hostname', ['localhost', '127.0.0.1'])
def test_python_ssl_mutual_handshake_with_hostname_check(pki, server_hostname):
    data, error = handshake(server_context(pki, crl=True), client_context(pki, pki.client_pem('web1')),
                            server_hostname)
    assert error is None and data == b'hello'


def test_python_ssl_server_refuses_a_revoked_client(pki):
    pem = pki.client_pem('web1')
    pki.revoke('web1')
    data, error = handshake(server_context(pki, crl=True), client_context(pki, pem))
    assert data is None and isinstance(error, ssl.SSLCertVerificationError)
    assert 'revoked' in error.verify_message


def test_python_ssl_server_refuses_an_expired_client(pki):
    data, error = handshake(server_context(pki), client_context(pki, pki.expired_client_pem('web1')))
    assert data is None and isinstance(error, ssl.SSLCertVerificationError)
    assert 'expired' in error.verify_message


def test_python_ssl_server_refuses_a_client_of_another_ca(pki):
    data, error = handshake(server_context(pki), client_context(pki, pki.other_ca_client_pem('web1')))
    assert data is None and isinstance(error, ssl.SSLCertVerificationError)
    assert 'issuer' in error.verify_message


@needs_openssl
def test_a_ca_made_by_openssl_without_key_identifiers_gets_a_crl_and_clients(tmp_path):
    """An upgrade keeps the CA an older loghogd made with openssl: no SKI, no CRL, no index."""
    config = tmp_path / 'openssl.cnf'
    config.write_text('[req]\ndistinguished_name = dn\n[dn]\n[v3]\n'
                      'basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n')
    subprocess.run([OPENSSL, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=old loghog CA',
                    '-days', '3650', '-config', str(config), '-extensions', 'v3',
                    '-addext', 'subjectKeyIdentifier=none', '-addext', 'authorityKeyIdentifier=none',
                    '-keyout', str(tmp_path / 'loghog-ca.key'), '-out', str(tmp_path / 'loghog-ca.cert')],
                   check=True, capture_output=True, timeout=60)
    pki = ca_library.CaFiles(str(tmp_path), 'loghog')
    result = run_command('loghog-server-cert', '--dir', str(tmp_path), '--crl-only')
    assert result.stdout == 'wrote %s: 0 revoked certificates\n' % pki.crl and mode(pki.crl) == 0o644
    pem = str(tmp_path / 'old.pem')
    run_command('loghog-client-cert', 'old', '--dir', str(tmp_path), '--out', pem)
    verify = [OPENSSL, 'verify', '-CAfile', pki.cert, '-crl_check', '-CRLfile', pki.crl, pem]
    assert subprocess.run(verify, capture_output=True, timeout=30).returncode == 0
    run_command('loghog-client-cert', '--revoke', 'old', '--dir', str(tmp_path))
    refused = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and 'certificate revoked' in refused.stdout + refused.stderr


def test_crl_only_needs_the_ca(tmp_path):
    result = run_command('loghog-server-cert', '--dir', str(tmp_path), '--crl-only', check=False)
    assert result.returncode == 1 and 'loghog-ca.key does not exist' in result.stderr
    assert os.listdir(str(tmp_path)) == []


def test_server_only_renews_the_server_certificate_and_keeps_the_ca(pki):
    ca_before, client = read_bytes(pki.ca_cert), pki.client_pem('web1')
    old_server = load_cert(pki.server_pem)
    result = run_command('loghog-server-cert', '--dir', pki.directory, '--server-only', '--cn', 'localhost',
                         check=False)
    assert result.returncode == 1 and 'refusing to overwrite %s' % pki.server_pem in result.stderr
    run_command('loghog-server-cert', '--dir', pki.directory, '--server-only', '--force',
                '--cn', 'logs.example.com')
    server = load_cert(pki.server_pem)
    assert server.serial_number != old_server.serial_number and mode(pki.server_pem) == 0o600
    assert 'logs.example.com' in extension(server, x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert read_bytes(pki.ca_cert) == ca_before
    data, error = handshake(server_context(pki), client_context(pki, client), 'logs.example.com')
    assert error is None and data == b'hello'


def test_ca_name_must_leave_room_for_the_common_name(tmp_path):
    result = run_command('loghog-server-cert', '--dir', str(tmp_path), '--name', 'x' * 62, check=False)
    assert result.returncode == 1 and 'is longer than 61 characters' in result.stderr
    run_command('loghog-server-cert', '--dir', str(tmp_path), '--name', 'x' * 61, '--cn', 'localhost')
    assert load_cert(str(tmp_path / ('x' * 61 + '-ca.cert'))).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value == 'x' * 61 + ' CA'


def test_commands_use_no_deprecated_api(tmp_path):
    """Warnings would reach the operator's terminal: none on this cryptography version."""
    strict = dict(os.environ, PYTHONWARNINGS='error')
    for command, *arguments in (
            ('loghog-server-cert', '--dir', str(tmp_path), '--cn', 'localhost'),
            ('loghog-client-cert', 'web1', '--dir', str(tmp_path), '--out', str(tmp_path)),
            ('loghog-client-cert', '--revoke', 'web1', '--dir', str(tmp_path)),
            ('loghog-server-cert', '--dir', str(tmp_path), '--crl-only'),
            ('loghog-server-cert', '--dir', str(tmp_path), '--server-only', '--force')):
        result = run_command(command, *arguments, env=strict)
        assert result.stderr == ''


def test_force_keeps_the_group_that_may_read_the_server_pem(pki):
    """Debian makes loghog-server.pem root:loghog 0640 so that the daemon's user can read it."""
    group = os.getgid() if os.geteuid() != 0 else 65534
    os.chown(pki.server_pem, -1, group)
    os.chmod(pki.server_pem, 0o640)
    run_command('loghog-server-cert', '--dir', pki.directory, '--server-only', '--force', '--cn', 'localhost')
    status = os.stat(pki.server_pem)
    assert (status.st_gid, stat.S_IMODE(status.st_mode)) == (group, 0o640)
    run_command('loghog-server-cert', '--dir', pki.directory, '--force', '--cn', 'localhost')
    assert mode(pki.ca_key) == 0o600 and mode(pki.server_pem) == 0o640
