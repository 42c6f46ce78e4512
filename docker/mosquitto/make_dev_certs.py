"""Make a DEVELOPMENT certificate authority, a broker certificate and per-device client certificates.

    python docker/mosquitto/make_dev_certs.py --host mqtt.example.com vehicle_01 vehicle_02

writes, under docker/mosquitto/config/certs/ (git-ignored):
    ca.crt, ca.key             the development CA (kept and reused on later runs)
    server.crt, server.key     the broker's certificate: localhost, 127.0.0.1, ::1, mosquitto and every --host
    clients/NAME.crt, .key     one client certificate per device, with CN = NAME (the MQTT user name)

These certificates are for development and for trying the deployment guide. For production, issue
them from a CA you operate properly (offline CA key, short lifetimes, revocation): see DEPLOYMENT.md.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rtds.schema import DEVICE_ID_PATTERN

DEFAULT_OUT = Path(__file__).resolve().parent / "config" / "certs"
# Names the broker is reached by on this machine and inside the compose network.
BUILTIN_SERVER_NAMES = ("localhost", "127.0.0.1", "::1", "mosquitto")
PRIVATE_KEY_MODE = 0o600
# The broker's key must be readable by the mosquitto user in the container: DEPLOYMENT.md gives it group 1883.
SERVER_KEY_MODE = 0o640
CERT_MODE = 0o644

WARNING = """
==============================================================================
  DEVELOPMENT CERTIFICATES ONLY
  The CA key sits next to the certificates it signs, unencrypted, on this
  machine. Anyone who copies it can mint a certificate for any device.
  Use them to try the setup; for production use a CA you operate properly
  (see DEPLOYMENT.md, "Certificates for production").
==============================================================================
"""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: ec.EllipticCurvePrivateKey, mode: int) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with the final mode, so the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, CERT_MODE)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "realtime-datastreaming (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)


def make_ca(days: int, common_name: str = "rtds development CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def subject_alternative_names(names: Iterable[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses, each once, in the order given."""
    result: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def issue_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    days: int,
    server_names: Iterable[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate: a server certificate when `server_names` is given, a client certificate otherwise."""
    key = new_key()
    not_before, not_after = _validity(days)
    sans = subject_alternative_names(server_names)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if sans else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def load_or_make_ca(out: Path, days: int, force: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    cert_path, key_path = out / "ca.crt", out / "ca.key"
    if cert_path.exists() and key_path.exists() and not force:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SystemExit(f"{key_path} is not a key this script made; move it away or pass --force")
        return cert, key, False
    cert, key = make_ca(days)
    write_key(key_path, key, PRIVATE_KEY_MODE)
    write_cert(cert_path, cert)
    return cert, key, True


def check_client_name(name: str) -> None:
    if not DEVICE_ID_PATTERN.fullmatch(name):
        raise SystemExit(f"{name!r} is not a device id; use 1-64 letters, digits, '_', '.' or '-' (e.g. vehicle_01)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Make a DEVELOPMENT CA, a broker certificate and client certificates (CN = device id)."
    )
    parser.add_argument("clients", nargs="*", help="device ids (or service users) to issue client certificates for")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="extra name or IP address the broker is reached by (repeatable), e.g. mqtt.example.com",
    )
    parser.add_argument("--days", type=int, default=365, help="validity of new certificates in days (default: 365)")
    parser.add_argument(
        "--force", action="store_true", help="make a new CA even if one exists (invalidates the others)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in args.clients:
        check_client_name(name)
    out: Path = args.out
    print(WARNING, file=sys.stderr)

    ca_cert, ca_key, made_ca = load_or_make_ca(out, args.days, args.force)
    print(f"{'made' if made_ca else 'reused'} CA        {out / 'ca.crt'}")

    server_names = [*BUILTIN_SERVER_NAMES, *args.host]
    if made_ca or args.host or not (out / "server.crt").exists():
        common_name = args.host[0] if args.host else "localhost"
        server_cert, server_key = issue_cert(ca_cert, ca_key, common_name, days=args.days, server_names=server_names)
        write_key(out / "server.key", server_key, SERVER_KEY_MODE)
        write_cert(out / "server.crt", server_cert)
        print(f"made server    {out / 'server.crt'}  for {', '.join(dict.fromkeys(server_names))}")
    else:
        print(f"kept server    {out / 'server.crt'}  (pass --host to reissue it)")

    for name in args.clients:
        cert, key = issue_cert(ca_cert, ca_key, name, days=args.days)
        write_key(out / "clients" / f"{name}.key", key, PRIVATE_KEY_MODE)
        write_cert(out / "clients" / f"{name}.crt", cert)
        print(f"made client    {out / 'clients' / (name + '.crt')}  CN={name}")

    print("\nDEVELOPMENT ONLY: keep ca.key off any machine that does not issue certificates.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
