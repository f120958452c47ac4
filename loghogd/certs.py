"""loghog-server-cert and loghog-client-cert: the command lines of the private CA.

These two commands make the CA, the server's certificate and one certificate
per client, and revoke a client through a CRL that the server's `crlfile`
loads. The work is done by `loghogd.castore` and `loghogd.pki`.
"""

import argparse
import socket
import sys
from typing import Optional, Sequence

from loghogd.castore import (_client_output, create_client_file, create_server_files, load_ca,
                             make_directory, private_umask, refresh_crl, renew_server_file,
                             revoke_client)
from loghogd.pki import (CaFiles, CertError, CertificateAuthority, DEFAULT_CA_NAME, DEFAULT_DAYS, DEFAULT_DIR,
                         RSA_BITS, not_valid_after, serial_hex, validate_ca_name, validate_name)

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


def _load_client_ca(directory: str, ca_name: str) -> CertificateAuthority:
    """The CA for loghog-client-cert; without --dir, a failure says how to name another one."""
    try:
        return load_ca(directory, ca_name)
    except CertError as error:
        if directory != DEFAULT_DIR:
            raise
        raise CertError('%s\n  (without --dir the CA is looked for in %s; name another with --dir, e.g.'
                        ' --dir var/certs for the one scripts/run-dev makes in a clone)'
                        % (error, DEFAULT_DIR)) from None


def client_cert_main(argv: Optional[Sequence[str]] = None) -> int:
    """loghog-client-cert: issue NAME.pem, or with --revoke put NAME on the CRL."""
    parser = _client_parser()
    args = parser.parse_args(argv)
    if args.cert and not args.revoke:
        parser.error('--cert only goes with --revoke')

    def issue() -> None:
        name = validate_name(args.name, 'client name')
        ca = _load_client_ca(args.dir, validate_ca_name(args.ca_name, '--ca-name'))
        out = _client_output(name, args.out)
        cert = create_client_file(ca, name, out, args.days, args.rsa, args.force)
        print('wrote %s: CN=%s, serial %s, valid until %s'
              % (out, name, serial_hex(cert.serial_number), not_valid_after(cert).date()))

    def revoke() -> None:
        name = validate_name(args.name, 'client name')
        ca = _load_client_ca(args.dir, validate_ca_name(args.ca_name, '--ca-name'))
        new = revoke_client(ca, name, args.cert)
        if new:
            print('revoked %s (serial %s) in %s; reload loghogd (SIGHUP) to apply it'
                  % (name, ', '.join(serial_hex(serial) for serial in sorted(new)), ca.files.crl))
        else:
            print('%s is already revoked in %s' % (name, ca.files.crl))

    return _run('loghog-client-cert', revoke if args.revoke else issue)

