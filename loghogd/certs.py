"""loghog-server-cert and loghog-client-cert: a private CA for mutual TLS.

LogHog's TLS listener trusts exactly one private CA: the server presents a
certificate signed by it, and it accepts only clients that present one signed
by it too (the 0.7 client's `pemfile`, key and certificate in one file). These
two commands make that CA, the server's certificate and one certificate per
client, and revoke a client through a CRL that the server's `crlfile` loads.

Everything is done with `cryptography` (38 and newer) in-process, never by
running openssl, and every file is created under umask 077 in a temporary
file that is then linked or renamed into place: a private key is never
readable by anyone but its owner, not even for a moment, and a file is never
seen half written.

The files for a CA called NAME (default `loghog`) in DIR:

    NAME-ca.key      CA private key                         0600
    NAME-ca.cert     CA certificate, given to every client  0644
    NAME-ca.crl      revoked client certificates            0644
    NAME-ca.index    JSON: client name -> issued serials    0600
    NAME-server.pem  server key + certificate               0600

The functions `load_ca`, `issue_client_certificate` and `pem_bundle` are the
library behind loghog-client-cert; tests use them to make certificates the
commands will not make (an expired one).
"""

import argparse
import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import re
import secrets
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loghogd.atomicfile import fsync_directory

DEFAULT_DIR = '/etc/loghogd/certs'
DEFAULT_CA_NAME = 'loghog'
# About 100 years: the original made certificates for 1000 years; a century
# outlives any deployment and stays far from the year-9999 limit of X.509.
DEFAULT_DAYS = 36500
RSA_BITS = 3072
# not-before is set this far in the past so that a peer whose clock is
# somewhat behind still accepts a certificate made a moment ago.
CLOCK_SKEW = datetime.timedelta(days=1)
UTC = datetime.timezone.utc
# The last instant an X.509 GeneralizedTime can express.
LAST_VALID_TIME = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
# X.509 upper bound for a common name.
MAX_COMMON_NAME = 64
LOCAL_NAMES = ('localhost', '127.0.0.1', '::1')

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]


class CertError(Exception):
    """A certificate operation cannot be done; the message is for the operator."""


@dataclass(frozen=True)
class CaFiles:
    """Where the files of one CA live."""
    directory: str
    name: str

    def _path(self, suffix: str) -> str:
        return os.path.join(self.directory, self.name + suffix)

    @property
    def key(self) -> str:
        return self._path('-ca.key')

    @property
    def cert(self) -> str:
        return self._path('-ca.cert')

    @property
    def crl(self) -> str:
        return self._path('-ca.crl')

    @property
    def index(self) -> str:
        return self._path('-ca.index')

    @property
    def server_pem(self) -> str:
        return self._path('-server.pem')


@dataclass(frozen=True)
class CertificateAuthority:
    """A loaded CA: its key, its certificate and where they came from."""
    key: PrivateKey
    cert: x509.Certificate
    files: CaFiles


# ---------------------------------------------------------------- keys, names

def generate_key(use_rsa: bool = False) -> PrivateKey:
    """EC P-256 by default: small, fast, accepted by every OpenSSL in use."""
    if use_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def validate_name(name: str, what: str, max_length: int = MAX_COMMON_NAME) -> str:
    """A name that becomes both a file name and (part of) a certificate common name."""
    if not name:
        raise CertError('%s must not be empty' % what)
    if '/' in name or '\0' in name or name in ('.', '..'):
        raise CertError('%s %r must not contain "/" or be "." or ".."' % (what, name))
    if not name.isprintable():
        raise CertError('%s %r must not contain control characters' % (what, name))
    if len(name) > max_length:
        raise CertError('%s %r is longer than %d characters' % (what, name, max_length))
    return name


def _subject(common_name: str, unit: Optional[str] = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'LogHog')]
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit[:MAX_COMMON_NAME]))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _general_name(name: str) -> x509.GeneralName:
    """An IP address SAN for an address, else a DNS SAN (IDNA-encoded)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        return x509.DNSName(name.encode('idna').decode('ascii'))
    except UnicodeError:
        raise CertError('%r is neither an IP address nor a valid host name' % name) from None


def subject_alternative_names(names: Sequence[str]) -> x509.SubjectAlternativeName:
    """The given names plus the local ones, without duplicates, in order."""
    seen: List[x509.GeneralName] = []
    for name in list(names) + list(LOCAL_NAMES):
        general = _general_name(name)
        if general not in seen:
            seen.append(general)
    return x509.SubjectAlternativeName(seen)


# ---------------------------------------------------------------- time

def not_valid_after(cert: x509.Certificate) -> datetime.datetime:
    """The certificate's expiry as an aware UTC datetime, on cryptography 38 and 42+."""
    aware = getattr(cert, 'not_valid_after_utc', None)
    if aware is not None:
        return aware
    return cert.not_valid_after.replace(tzinfo=UTC)


def validity(days: int, now: Optional[datetime.datetime] = None) -> Tuple[datetime.datetime, datetime.datetime]:
    """(not_before, not_after) for a certificate valid `days` days from now."""
    now = now or datetime.datetime.now(UTC)
    if days < 1:
        raise CertError('--days must be at least 1, not %d' % days)
    try:
        not_after = now + datetime.timedelta(days=days)
    except OverflowError:
        not_after = None
    if not_after is None or not_after > LAST_VALID_TIME:
        raise CertError('--days %d ends after %s, the last date a certificate can hold'
                        % (days, LAST_VALID_TIME.date()))
    return now - CLOCK_SKEW, not_after


# ---------------------------------------------------------------- building

def authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The issuer's own SKI when it has one (CAs made by older tools may not)."""
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_identifiers(builder: x509.CertificateBuilder, public_key,
                     issuer_cert: Optional[x509.Certificate]) -> x509.CertificateBuilder:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = builder.add_extension(ski, critical=False)
    if issuer_cert is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        aki = authority_key_identifier(issuer_cert)
    return builder.add_extension(aki, critical=False)


def _key_usage(cert_sign: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False,
        key_encipherment=key_encipherment, data_encipherment=False,
        key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False)


def ca_common_name(ca_name: str) -> str:
    return '%s CA' % ca_name


def validate_ca_name(ca_name: str, what: str) -> str:
    """A CA name fits in a file name and, with ' CA' appended, in a common name."""
    return validate_name(ca_name, what, MAX_COMMON_NAME - len(ca_common_name('')))


def build_ca_certificate(key: PrivateKey, ca_name: str, host: str,
                         not_before: datetime.datetime, not_after: datetime.datetime) -> x509.Certificate:
    """A self-signed CA that may sign leaf certificates and CRLs, nothing else."""
    subject = _subject(ca_common_name(ca_name), unit=host)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_key_usage(cert_sign=True), critical=True))
    builder = _key_identifiers(builder, key.public_key(), None)
    return builder.sign(key, hashes.SHA256())


def _leaf_certificate(ca: CertificateAuthority, key: PrivateKey, subject: x509.Name,
                      purpose: x509.ObjectIdentifier, not_before: datetime.datetime,
                      not_after: datetime.datetime,
                      san: Optional[x509.SubjectAlternativeName] = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(ca.cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(key_encipherment=isinstance(key, rsa.RSAPrivateKey)), critical=True)
               .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False))
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    builder = _key_identifiers(builder, key.public_key(), ca.cert)
    return builder.sign(ca.key, hashes.SHA256())


def build_server_certificate(ca: CertificateAuthority, key: PrivateKey, host: str, extra_names: Sequence[str],
                             not_before: datetime.datetime, not_after: datetime.datetime) -> x509.Certificate:
    """serverAuth, with the host, any extra names and the local names as SANs."""
    common_name = host if len(host) <= MAX_COMMON_NAME else 'loghog server'
    san = subject_alternative_names([host] + list(extra_names))
    return _leaf_certificate(ca, key, _subject(common_name), ExtendedKeyUsageOID.SERVER_AUTH,
                             not_before, not_after, san)


def issue_client_certificate(ca: CertificateAuthority, name: str, not_before: datetime.datetime,
                             not_after: datetime.datetime, use_rsa: bool = False
                             ) -> Tuple[PrivateKey, x509.Certificate]:
    """A new key and a clientAuth certificate with CN=name, signed by the CA.

    The validity is taken as given: the command clamps it to the CA's, tests
    pass a window in the past to get an expired certificate.
    """
    key = generate_key(use_rsa)
    cert = _leaf_certificate(ca, key, _subject(validate_name(name, 'client name')),
                             ExtendedKeyUsageOID.CLIENT_AUTH, not_before, not_after)
    return key, cert


def build_crl(ca: CertificateAuthority, revoked: Dict[int, datetime.datetime], number: int,
              now: Optional[datetime.datetime] = None) -> x509.CertificateRevocationList:
    """A CA-signed CRL listing `revoked` (serial -> date), valid as long as the CA."""
    now = now or datetime.datetime.now(UTC)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.cert.subject)
               .last_update(now - CLOCK_SKEW)
               .next_update(not_valid_after(ca.cert))
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(authority_key_identifier(ca.cert), critical=False))
    for serial in sorted(revoked):
        entry = (x509.RevokedCertificateBuilder()
                 .serial_number(serial).revocation_date(revoked[serial]).build())
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca.key, hashes.SHA256())


# ---------------------------------------------------------------- PEM

def pem_bundle(key: PrivateKey, cert: x509.Certificate) -> bytes:
    """Private key then certificate: what loghogd's and the client's pemfile hold."""
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


_PEM_CERTIFICATE = re.compile(rb'-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----', re.DOTALL)


def load_certificate(path: str, what: str) -> x509.Certificate:
    """The first certificate in a PEM file, which may also hold a key."""
    data = _read(path, what)
    match = _PEM_CERTIFICATE.search(data)
    try:
        if match is None:
            raise ValueError('no certificate in it')
        return x509.load_pem_x509_certificate(match.group(0))
    except ValueError as error:
        raise CertError('cannot load the %s %s: %s' % (what, path, error)) from None


def serial_hex(serial: int) -> str:
    """A serial as `openssl x509 -serial` prints it."""
    text = '%X' % serial
    return text if len(text) % 2 == 0 else '0' + text


# ---------------------------------------------------------------- files

def _read(path: str, what: str) -> bytes:
    try:
        with open(path, 'rb') as stream:
            return stream.read()
    except FileNotFoundError:
        raise CertError('the %s %s does not exist' % (what, path)) from None
    except PermissionError:
        raise CertError('cannot read the %s %s: permission denied (run as root?)' % (what, path)) from None
    except OSError as error:
        raise CertError('cannot read the %s %s: %s' % (what, path, error.strerror)) from None


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside are readable by their owner only, whatever the caller's umask."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _group_access(path: str) -> Optional[Tuple[int, int]]:
    """(gid, group read bit) of a file about to be replaced, None if there is none.

    An operator who let the daemon's group read the server's pem file
    (Debian: root:loghog 0640) keeps that across a renewal with --force.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_gid, status.st_mode & stat.S_IRGRP


def write_file(path: str, data: bytes, mode: int, replace: bool) -> None:
    """Create `path` with `mode` atomically; replace it only when `replace`.

    The data goes to a new 0600 file in the same directory first, so `path`
    is never seen partly written nor with a looser mode than `mode`; it is
    then renamed over `path` (replace) or hard-linked to it, which fails if
    `path` exists (no replace). A replaced file's group and group read
    permission are kept.
    """
    directory = os.path.dirname(path) or '.'
    temporary = os.path.join(directory, '.%s.%s.tmp' % (os.path.basename(path), secrets.token_hex(6)))
    previous = _group_access(path) if replace else None
    try:
        with open(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), 'wb') as stream:
            stream.write(data)
            stream.flush()
            if previous is not None:
                with contextlib.suppress(PermissionError):
                    os.fchown(stream.fileno(), -1, previous[0])
                    mode |= previous[1]
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
        fsync_directory(directory)
    except FileExistsError:
        raise CertError('refusing to overwrite %s; use --force to replace it' % path) from None
    except OSError as error:
        raise CertError('cannot write %s: %s' % (path, error.strerror)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def make_directory(path: str) -> None:
    """Create `path` (and parents) 0755: the server's user must reach its pem file."""
    previous = os.umask(0o022)
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as error:
        raise CertError('cannot create the directory %s: %s' % (path, error.strerror)) from None
    finally:
        os.umask(previous)


def refuse_existing(paths: Sequence[str]) -> None:
    """Fail before writing anything if any of `paths` exists."""
    existing = [path for path in paths if os.path.lexists(path)]
    if existing:
        raise CertError('refusing to overwrite %s; use --force to replace %s'
                        % (', '.join(existing), 'it' if len(existing) == 1 else 'them'))


def _same_public_key(key: PrivateKey, cert: x509.Certificate) -> bool:
    def spki(public_key) -> bytes:
        return public_key.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki(key.public_key()) == spki(cert.public_key())


def load_ca(directory: str, ca_name: str = DEFAULT_CA_NAME) -> CertificateAuthority:
    """The CA in `directory`, checked: key and certificate exist, load and match."""
    files = CaFiles(directory, ca_name)
    key_data = _read(files.key, 'CA key')
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as error:
        raise CertError('cannot load the CA key %s: %s' % (files.key, error)) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertError('the CA key %s is neither an EC nor an RSA key' % files.key)
    cert = load_certificate(files.cert, 'CA certificate')
    if not _same_public_key(key, cert):
        raise CertError('the CA key %s does not belong to the CA certificate %s' % (files.key, files.cert))
    return CertificateAuthority(key, cert, files)


@contextlib.contextmanager
def ca_lock(files: CaFiles) -> Iterator[None]:
    """Serializes commands that update the same CA's index and CRL."""
    try:
        fd = os.open(files.key, os.O_RDONLY)
    except OSError as error:
        raise CertError('cannot open the CA key %s: %s' % (files.key, error.strerror)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- index and CRL

def read_index(files: CaFiles) -> Dict[str, List[dict]]:
    """Client name -> the certificates issued to it ({'serial', 'not_after'})."""
    if not os.path.exists(files.index):
        return {}
    try:
        index = json.loads(_read(files.index, 'certificate index').decode('utf-8'))
        clients = index['clients']
        if not isinstance(clients, dict):
            raise ValueError('"clients" is not an object')
        return clients
    except (ValueError, KeyError, TypeError) as error:
        raise CertError('the certificate index %s is damaged: %s' % (files.index, error)) from None


def write_index(files: CaFiles, clients: Dict[str, List[dict]]) -> None:
    data = json.dumps({'clients': clients}, indent=1, sort_keys=True) + '\n'
    write_file(files.index, data.encode('utf-8'), 0o600, replace=True)


def record_issued(files: CaFiles, name: str, cert: x509.Certificate) -> None:
    clients = read_index(files)
    clients.setdefault(name, []).append({
        'serial': serial_hex(cert.serial_number),
        'not_after': not_valid_after(cert).strftime('%Y-%m-%dT%H:%M:%SZ'),
    })
    write_index(files, clients)


def _revocation_date(entry: x509.RevokedCertificate) -> datetime.datetime:
    aware = getattr(entry, 'revocation_date_utc', None)
    if aware is not None:
        return aware
    return entry.revocation_date.replace(tzinfo=UTC)


def _signed_by(ca: CertificateAuthority, signature: bytes, data: bytes,
               algorithm: Optional[hashes.HashAlgorithm]) -> bool:
    public_key = ca.cert.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        else:
            public_key.verify(signature, data, ec.ECDSA(algorithm))
    except InvalidSignature:
        return False
    return True


def read_crl(ca: CertificateAuthority) -> Tuple[Dict[int, datetime.datetime], int]:
    """The CA's current revocations (serial -> date) and CRL number; none if no CRL yet."""
    if not os.path.exists(ca.files.crl):
        return {}, 0
    try:
        crl = x509.load_pem_x509_crl(_read(ca.files.crl, 'CRL'))
    except ValueError as error:
        raise CertError('cannot load the CRL %s: %s' % (ca.files.crl, error)) from None
    if not crl.is_signature_valid(ca.cert.public_key()):
        raise CertError('the CRL %s is not signed by the CA %s' % (ca.files.crl, ca.files.cert))
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return {entry.serial_number: _revocation_date(entry) for entry in crl}, number


def write_crl(ca: CertificateAuthority, revoked: Dict[int, datetime.datetime], number: int, replace: bool) -> None:
    crl = build_crl(ca, revoked, number)
    write_file(ca.files.crl, crl.public_bytes(serialization.Encoding.PEM), 0o644, replace)


def serials_to_revoke(ca: CertificateAuthority, name: str, cert_path: Optional[str]) -> Set[int]:
    """From the certificate file when given, else every serial the index holds for `name`."""
    if cert_path is not None:
        cert = load_certificate(cert_path, 'client certificate')
        if cert.issuer != ca.cert.subject or not _signed_by(
                ca, cert.signature, cert.tbs_certificate_bytes, cert.signature_hash_algorithm):
            raise CertError('%s was not issued by the CA %s' % (cert_path, ca.files.cert))
        common_names = [attribute.value for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if name not in common_names:
            raise CertError('%s is the certificate of %s, not of %r'
                            % (cert_path, ', '.join(map(repr, common_names)) or 'no name', name))
        return {cert.serial_number}
    issued = read_index(ca.files).get(name)
    if not issued:
        raise CertError('no certificate issued to %r is recorded in %s; pass its file with --cert FILE'
                        % (name, ca.files.index))
    return {int(entry['serial'], 16) for entry in issued}


# ---------------------------------------------------------------- commands

def create_server_files(files: CaFiles, host: str, extra_names: Sequence[str], days: int,
                        use_rsa: bool, force: bool) -> List[str]:
    """A new CA, its empty CRL and index, and a server certificate; the paths written."""
    targets = [files.key, files.cert, files.crl, files.index, files.server_pem]
    if not force:
        refuse_existing(targets)
    not_before, not_after = validity(days)
    ca_key = generate_key(use_rsa)
    ca = CertificateAuthority(ca_key, build_ca_certificate(ca_key, files.name, host, not_before, not_after), files)
    server_key = generate_key(use_rsa)
    server_cert = build_server_certificate(ca, server_key, host, extra_names, not_before, not_after)
    write_file(files.key, ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600, force)
    write_file(files.cert, ca.cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
    write_crl(ca, {}, 1, force)
    write_file(files.index, b'{"clients": {}}\n', 0o600, force)
    write_file(files.server_pem, pem_bundle(server_key, server_cert), 0o600, force)
    return targets


def renew_server_file(ca: CertificateAuthority, host: str, extra_names: Sequence[str], days: int,
                      use_rsa: bool, force: bool) -> str:
    """A new server key and certificate from the existing CA; client certificates stay valid."""
    if not force:
        refuse_existing([ca.files.server_pem])
    not_before, not_after = validity(days)
    key = generate_key(use_rsa)
    cert = build_server_certificate(ca, key, host, extra_names, not_before,
                                    min(not_after, not_valid_after(ca.cert)))
    write_file(ca.files.server_pem, pem_bundle(key, cert), 0o600, force)
    return ca.files.server_pem


def _client_output(name: str, out: Optional[str]) -> str:
    if out is None:
        return name + '.pem'
    if os.path.isdir(out):
        return os.path.join(out, name + '.pem')
    return out


def create_client_file(ca: CertificateAuthority, name: str, out: str, days: int,
                       use_rsa: bool, force: bool) -> x509.Certificate:
    """Issue, record in the index, then write key + certificate to `out`."""
    if not force:
        refuse_existing([out])
    not_before, not_after = validity(days)
    ca_expiry = not_valid_after(ca.cert)
    if ca_expiry <= datetime.datetime.now(UTC):
        raise CertError('the CA certificate %s expired on %s' % (ca.files.cert, ca_expiry.date()))
    key, cert = issue_client_certificate(ca, name, not_before, min(not_after, ca_expiry), use_rsa)
    with ca_lock(ca.files):
        record_issued(ca.files, name, cert)
    write_file(out, pem_bundle(key, cert), 0o600, force)
    return cert


def revoke_client(ca: CertificateAuthority, name: str, cert_path: Optional[str]) -> Set[int]:
    """Add `name`'s certificates to the CRL; the serials newly revoked (none if all were)."""
    with ca_lock(ca.files):
        serials = serials_to_revoke(ca, name, cert_path)
        revoked, number = read_crl(ca)
        new = serials - set(revoked)
        if new:
            now = datetime.datetime.now(UTC).replace(microsecond=0)
            revoked.update({serial: now for serial in new})
            write_crl(ca, revoked, number + 1, replace=True)
    return new


def refresh_crl(ca: CertificateAuthority) -> int:
    """Sign the CRL anew, keeping its entries (or an empty one if it is missing); how many it lists."""
    with ca_lock(ca.files):
        revoked, number = read_crl(ca)
        write_crl(ca, revoked, number + 1, replace=True)
    return len(revoked)


# ---------------------------------------------------------------- command lines

def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a whole number of days' % text) from None
    if days < 1:
        raise argparse.ArgumentTypeError('must be at least 1, not %d' % days)
    return days


def _server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='loghog-server-cert',
        description='Create the private CA of a LogHog server and the server certificate it signs.')
    parser.add_argument('--dir', default=DEFAULT_DIR, help='where the files go (default %(default)s)')
    parser.add_argument('--name', default=DEFAULT_CA_NAME,
                        help='file name prefix: NAME-ca.key, NAME-server.pem, ... (default %(default)s)')
    parser.add_argument('--cn', metavar='HOSTNAME', default=None,
                        help="the server's host name, common name and first SAN (default: this host's FQDN)")
    parser.add_argument('--san', metavar='NAME', action='append', default=[],
                        help='another host name or IP address for the server certificate (repeatable)')
    parser.add_argument('--days', metavar='N', type=_days, default=DEFAULT_DAYS,
                        help='validity in days (default %(default)s)')
    parser.add_argument('--rsa', action='store_true', help='RSA %d-bit keys instead of EC P-256' % RSA_BITS)
    parser.add_argument('--force', action='store_true',
                        help='replace existing files (a new CA invalidates every client certificate)')
    parser.add_argument('--server-only', action='store_true',
                        help='keep the existing CA; only make a new NAME-server.pem (with --force to replace it)')
    parser.add_argument('--crl-only', action='store_true',
                        help="only (re)write NAME-ca.crl for the existing CA, keeping its entries")
    return parser


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='loghog-client-cert',
        description='Issue (or revoke) a LogHog client certificate signed by the private CA.')
    parser.add_argument('name', metavar='NAME', help='the client: its common name and, by default, NAME.pem')
    parser.add_argument('--dir', default=DEFAULT_DIR, help='where the CA lives (default %(default)s)')
    parser.add_argument('--ca-name', metavar='NAME', default=DEFAULT_CA_NAME,
                        help='CA file name prefix (default %(default)s)')
    parser.add_argument('--out', metavar='FILE', help='where to write key + certificate (default ./NAME.pem)')
    parser.add_argument('--days', metavar='N', type=_days, default=DEFAULT_DAYS,
                        help="validity in days, at most the CA's (default %(default)s)")
    parser.add_argument('--rsa', action='store_true', help='an RSA %d-bit key instead of EC P-256' % RSA_BITS)
    parser.add_argument('--force', action='store_true', help='replace an existing output file')
    parser.add_argument('--revoke', action='store_true',
                        help="revoke NAME's certificates: add them to the CA's CRL")
    parser.add_argument('--cert', metavar='FILE', help='with --revoke: revoke the certificate in FILE')
    return parser


def _run(prog: str, action) -> int:
    try:
        with private_umask():
            action()
    except CertError as error:
        print('%s: %s' % (prog, error), file=sys.stderr)
        return 1
    return 0


def server_cert_main(argv: Optional[Sequence[str]] = None) -> int:
    """loghog-server-cert: create the CA, its CRL and the server's pem file."""
    parser = _server_parser()
    args = parser.parse_args(argv)

    def crl_only() -> None:
        ca = load_ca(args.dir, validate_ca_name(args.name, '--name'))
        count = refresh_crl(ca)
        print('wrote %s: %d revoked certificate%s' % (ca.files.crl, count, '' if count == 1 else 's'))

    def server_only() -> None:
        ca = load_ca(args.dir, validate_ca_name(args.name, '--name'))
        print('wrote %s' % renew_server_file(ca, args.cn or socket.getfqdn(), args.san, args.days,
                                              args.rsa, args.force))

    def create() -> None:
        files = CaFiles(args.dir, validate_ca_name(args.name, '--name'))
        host = args.cn or socket.getfqdn()
        make_directory(args.dir)
        for path in create_server_files(files, host, args.san, args.days, args.rsa, args.force):
            print('wrote %s' % path)
        print('give %s to the clients; keep %s secret' % (files.cert, files.key))

    if args.crl_only and args.server_only:
        parser.error('--crl-only and --server-only exclude each other')
    return _run('loghog-server-cert', crl_only if args.crl_only else server_only if args.server_only else create)


def client_cert_main(argv: Optional[Sequence[str]] = None) -> int:
    """loghog-client-cert: issue NAME.pem, or with --revoke put NAME on the CRL."""
    parser = _client_parser()
    args = parser.parse_args(argv)
    if args.cert and not args.revoke:
        parser.error('--cert only goes with --revoke')

    def issue() -> None:
        name = validate_name(args.name, 'client name')
        ca = load_ca(args.dir, validate_ca_name(args.ca_name, '--ca-name'))
        out = _client_output(name, args.out)
        cert = create_client_file(ca, name, out, args.days, args.rsa, args.force)
        print('wrote %s: CN=%s, serial %s, valid until %s'
              % (out, name, serial_hex(cert.serial_number), not_valid_after(cert).date()))

    def revoke() -> None:
        name = validate_name(args.name, 'client name')
        ca = load_ca(args.dir, validate_ca_name(args.ca_name, '--ca-name'))
        new = revoke_client(ca, name, args.cert)
        if new:
            print('revoked %s (serial %s) in %s; reload loghogd (SIGHUP) to apply it'
                  % (name, ', '.join(serial_hex(serial) for serial in sorted(new)), ca.files.crl))
        else:
            print('%s is already revoked in %s' % (name, ca.files.crl))

    return _run('loghog-client-cert', revoke if args.revoke else issue)
