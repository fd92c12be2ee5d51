"""A workload's client certificate and key, from wherever they live.

- PEM files (``from_files``), a PKCS#12 bundle (``from_pkcs12``);
- the managed workload identity directory of Compute Engine / GKE
  (``from_workload_identity_dir``, default ``/run/secrets/workload-spiffe-credentials``),
  which an agent rotates by writing a new directory and moving a symlink. The
  symlink is resolved once and the certificate and key are read from that one
  directory; a pair that does not match, a file cut short, or a directory or file
  missing in the agent's remove-then-rename gap (caught mid-rotation) is retried.

Every loader checks that the key matches the certificate and that the
certificate is valid now, so a broken identity fails here with a clear message
instead of as a TLS alert.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

WORKLOAD_IDENTITY_DIR = "/run/secrets/workload-spiffe-credentials"
BUNDLE_FILE = "credential-bundle.private-key.pem"


class IdentityError(Exception):
    """The certificate or key cannot be used (missing, mismatched, expired...)."""


@dataclass(frozen=True)
class ClientIdentity:
    certificate_chain_pem: bytes  # leaf first
    private_key_pem: bytes
    source: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_chain_pem)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def write_files(self, directory: str | None = None) -> tuple[str, str]:
        """The chain and key as 0600 files (TLS libraries want paths); the caller deletes them."""
        paths = []
        for suffix, data in (("-cert.pem", self.certificate_chain_pem), ("-key.pem", self.private_key_pem)):
            fd, path = tempfile.mkstemp(suffix=suffix, dir=directory)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            paths.append(path)
        return paths[0], paths[1]


def from_files(certificate: str, key: str) -> ClientIdentity:
    return _checked(_read(certificate), _read(key), f"{certificate} + {key}")


def from_pkcs12(path: str, password: bytes | None = None) -> ClientIdentity:
    try:
        key, leaf, chain = pkcs12.load_key_and_certificates(_read(path), password)
    except ValueError as error:
        raise IdentityError(f"{path} is not a PKCS#12 bundle this password opens ({error})") from None
    if key is None or leaf is None:
        raise IdentityError(f"{path} lacks a private key or a certificate")
    chain_pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in [leaf, *chain])
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return _checked(chain_pem, key_pem, path)


def from_workload_identity_dir(
    directory: str = WORKLOAD_IDENTITY_DIR, attempts: int = 20, delay: float = 0.05
) -> ClientIdentity:
    """Certificate and key from a rotated credentials directory, never a mismatched pair."""
    last_error = ""
    for attempt in range(attempts):
        try:
            bundle = Path(directory, BUNDLE_FILE)
            if bundle.exists():  # SPIFFE filesystem delivery: key then chain, in one file
                key_pem, chain_pem = _split_bundle(bundle.read_bytes())
                return _checked(chain_pem, key_pem, str(bundle), spiffe=True)
            resolved = Path(os.path.realpath(directory))  # once: every file from the same directory
            chain_pem = (resolved / "certificates.pem").read_bytes()
            key_pem = (resolved / "private_key.pem").read_bytes()
            return _checked(chain_pem, key_pem, str(resolved), spiffe=True)
        except FileNotFoundError as error:
            last_error = f"{error.filename} does not exist"
            # The agent removes the old credentials before renaming the new ones in, so a missing directory
            # may be a rotation's gap: retried like a torn pair. Only a missing parent (nothing to rename
            # into) is certain at once; a directory still missing after the bound is reported as absent.
            if not os.path.lexists(directory) and (
                attempt == attempts - 1 or not os.path.isdir(os.path.dirname(os.path.abspath(directory)))
            ):
                raise IdentityError(f"{directory} does not exist: is managed workload identity enabled for "
                                    "this VM or pod?") from None
        except _Mismatch as error:
            last_error = str(error)
        time.sleep(delay)  # the writer swaps the directory: try again shortly
    raise IdentityError(f"no consistent certificate and key in {directory} after {attempts} tries ({last_error})")


class _Mismatch(IdentityError):
    """Certificate and key that do not (yet) make a whole pair: mismatched, or one caught mid-write."""


def _checked(chain_pem: bytes, key_pem: bytes, source: str, spiffe: bool = False) -> ClientIdentity:
    # An unparsable or cut-short file is what a read during the writer's write looks like: it is retried
    # like a mismatched pair (by the loaders that retry), and reported as it is once the retries run out.
    for name, pem in (("certificate", chain_pem), ("private key", key_pem)):
        if pem.count(b"-----BEGIN ") != pem.count(b"-----END "):
            raise _Mismatch(f"{source}: the {name} file ends inside a PEM block (caught mid-write?)")
    try:
        leaf = x509.load_pem_x509_certificate(chain_pem)
    except ValueError:
        raise _Mismatch(f"{source}: no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        raise _Mismatch(f"{source}: no unencrypted PEM private key") from None
    except TypeError:  # encrypted: no amount of waiting helps
        raise IdentityError(f"{source}: no unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise _Mismatch(f"{source}: the private key does not belong to the certificate")
    now = datetime.now(UTC)
    if now >= leaf.not_valid_after_utc:
        raise IdentityError(f"{source}: the certificate expired at {leaf.not_valid_after_utc.isoformat()}")
    if now < leaf.not_valid_before_utc:
        raise IdentityError(f"{source}: the certificate is not valid before {leaf.not_valid_before_utc.isoformat()}")
    if spiffe:
        try:
            uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if len([uri for uri in uris if uri.startswith("spiffe://")]) != 1:
            raise _Mismatch(f"{source}: the certificate must carry exactly one SPIFFE ID")
    return ClientIdentity(chain_pem, key_pem, source)


def _split_bundle(data: bytes) -> tuple[bytes, bytes]:
    marker = b"-----END PRIVATE KEY-----"
    head, found, tail = data.partition(marker)
    if not found:
        raise _Mismatch("the credential bundle has no private key block")
    return head + found + b"\n", tail.lstrip()


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as source:
            return source.read()
    except OSError as error:
        raise IdentityError(f"cannot read {path}: {error.strerror}") from None
