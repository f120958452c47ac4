"""The files of a private CA: created atomically and privately, loaded, indexed, revoked.

Every file is created under umask 077 in a temporary file that is then
linked or renamed into place: a private key is never readable by anyone but
its owner, not even for a moment, and a file is never seen half written.

The files for a CA called NAME (default `loghog`) in DIR:

    NAME-ca.key      CA private key                         0600
    NAME-ca.cert     CA certificate, given to every client  0644
    NAME-ca.crl      revoked client certificates            0644
    NAME-ca.index    JSON: client name -> issued serials    0600
    NAME-server.pem  server key + certificate               0600

The functions `load_ca`, `issue_client_certificate` (in `loghogd.pki`) and
`pem_bundle` are the library behind loghog-client-cert; tests use them to make
certificates the commands will not make (an expired one).
"""

import contextlib
import datetime
import fcntl
import json
import os
import secrets
import stat
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from loghogd.atomicfile import fsync_directory
from loghogd.pki import (CaFiles, CertError, CertificateAuthority, DEFAULT_CA_NAME, PrivateKey, UTC,
                         build_ca_certificate, build_crl, build_server_certificate, generate_key,
                         issue_client_certificate, load_certificate, not_valid_after, pem_bundle,
                         read_file, serial_hex, validity)

# ---------------------------------------------------------------- files

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
    key_data = read_file(files.key, 'CA key')
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
        index = json.loads(read_file(files.index, 'certificate index').decode('utf-8'))
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
        crl = x509.load_pem_x509_crl(read_file(ca.files.crl, 'CRL'))
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


