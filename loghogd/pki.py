"""The private CA of LogHog's mutual TLS: keys, names and X.509 objects, no files.

LogHog's TLS listener trusts exactly one private CA: the server presents a
certificate signed by it, and it accepts only clients that present one signed
by it too (the 0.7 client's `pemfile`, key and certificate in one file).
Everything is done with `cryptography` (38 and newer) in-process, never by
running openssl. `loghogd.castore` keeps these objects in files;
`loghogd.certs` is the two command lines on top.
"""

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


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
    data = read_file(path, what)
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


# ---------------------------------------------------------------- reading

def read_file(path: str, what: str) -> bytes:
    try:
        with open(path, 'rb') as stream:
            return stream.read()
    except FileNotFoundError:
        raise CertError('the %s %s does not exist' % (what, path)) from None
    except PermissionError:
        raise CertError('cannot read the %s %s: permission denied (run as root?)' % (what, path)) from None
    except OSError as error:
        raise CertError('cannot read the %s %s: %s' % (what, path, error.strerror)) from None
