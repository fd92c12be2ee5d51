"""A development PKI: a CA, the gateway's server certificate, client certificates.

    python -m devtools.pki init [--dir .local]
    python -m devtools.pki client NAME [--dns D]... [--uri U]... [--spiffe S]
                                  [--expired] [--foreign-ca] [--no-client-auth-eku]

``init`` is idempotent: it creates only what is missing. ``client`` prints the
paths of the new certificate and key. Never used by the deployed function.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DIR = Path(".local")
DEFAULT_CLIENT_DNS = "client.local.test"
DEFAULT_CLIENT_SPIFFE = "spiffe://local.test/ns/demo/sa/workload"


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path


def ensure_dev_pki(directory: Path = DEFAULT_DIR) -> dict[str, Path]:
    """Create (if missing) the CA, server and default client certificates and a signing key."""
    pki = directory / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = _ensure_ca(pki, "ca", "Token Service Dev CA")
    if not (pki / "server.pem").exists():
        _issue(
            ca, pki / "server.pem", pki / "server-key.pem", common_name="localhost",
            dns=["localhost"], ips=["127.0.0.1"], eku=ExtendedKeyUsageOID.SERVER_AUTH,
        )
    if not (pki / "client.pem").exists():
        mint_client(directory, "client", dns=[DEFAULT_CLIENT_DNS], spiffe=DEFAULT_CLIENT_SPIFFE)
    signing_key = directory / "signing-key.pem"
    if not signing_key.exists():
        _write_key(signing_key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return {
        "ca": pki / "ca.pem",
        "server_cert": pki / "server.pem",
        "server_key": pki / "server-key.pem",
        "client_cert": pki / "client.pem",
        "client_key": pki / "client-key.pem",
        "signing_key": signing_key,
    }


def mint_client(
    directory: Path,
    name: str,
    *,
    dns: list[str] = (),
    uris: list[str] = (),
    spiffe: str | None = None,
    expired: bool = False,
    foreign_ca: bool = False,
    client_auth_eku: bool = True,
) -> Issued:
    """Issue a client certificate ``<name>.pem`` + ``<name>-key.pem`` under ``<directory>/pki``."""
    pki = directory / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = _ensure_ca(pki, "foreign-ca", "Untrusted Foreign CA") if foreign_ca else _ensure_ca(
        pki, "ca", "Token Service Dev CA"
    )
    uri_sans = ([spiffe] if spiffe else []) + list(uris)
    issued = Issued(pki / f"{name}.pem", pki / f"{name}-key.pem")
    _issue(
        ca, issued.certificate, issued.key, common_name=name, dns=list(dns), uris=uri_sans,
        eku=ExtendedKeyUsageOID.CLIENT_AUTH if client_auth_eku else ExtendedKeyUsageOID.CODE_SIGNING,
        expired=expired,
    )
    return issued


@dataclass(frozen=True)
class _Authority:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def _ensure_ca(pki: Path, stem: str, common_name: str) -> _Authority:
    cert_path, key_path = pki / f"{stem}.pem", pki / f"{stem}-key.pem"
    if cert_path.exists() and key_path.exists():
        return _Authority(
            x509.load_pem_x509_certificate(cert_path.read_bytes()),
            serialization.load_pem_private_key(key_path.read_bytes(), password=None),
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return _Authority(certificate, key)


def _issue(
    ca: _Authority,
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str,
    dns: list[str],
    ips: list[str] = (),
    uris: list[str] = (),
    eku: x509.ObjectIdentifier,
    expired: bool = False,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = _now()
    not_before, not_after = (
        (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
        if expired
        else (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=365))
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.UniformResourceIdentifier(uri) for uri in uris]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    certificate = builder.sign(ca.key, hashes.SHA256())
    _write_key(key_path, key)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.pki", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output folder (default .local)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create the dev CA, server and client certificates and signing key")
    client = commands.add_parser("client", help="mint another client certificate")
    client.add_argument("name")
    client.add_argument("--dns", action="append", default=[], help="DNS SAN (repeatable)")
    client.add_argument("--uri", action="append", default=[], help="URI SAN (repeatable)")
    client.add_argument("--spiffe", help="SPIFFE ID (a spiffe:// URI SAN)")
    client.add_argument("--expired", action="store_true", help="validity window in the past")
    client.add_argument("--foreign-ca", action="store_true", help="issue from a CA the gateway does not trust")
    client.add_argument("--no-client-auth-eku", action="store_true", help="omit the clientAuth EKU")
    args = parser.parse_args(argv)
    if args.command == "init":
        for label, path in ensure_dev_pki(args.dir).items():
            print(f"{label}: {path}")
        return 0
    issued = mint_client(
        args.dir, args.name, dns=args.dns, uris=args.uri, spiffe=args.spiffe, expired=args.expired,
        foreign_ca=args.foreign_ca, client_auth_eku=not args.no_client_auth_eku,
    )
    print(f"certificate: {issued.certificate}\nkey: {issued.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
