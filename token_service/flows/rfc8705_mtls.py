"""The ``xlb-mtls-client-credentials`` flow (RFC 8705 ``tls_client_auth``).

The Google load balancer checks the client certificate and passes what it saw
in custom request headers. This module turns those header values into a
``ClientCertificate`` or refuses with a reason the client can act on. Formats
follow the load balancer's documented variables
(https://cloud.google.com/load-balancing/docs/custom-headers).
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import NamedTuple

from token_service.errors import CommaInDnsName, MalformedValue, OAuthError, Reason, invalid_client
from token_service.flows.subjects import MAX_SUBJECT_BYTES, reserved_prefix
from token_service.request import CertificateHeaders, MtlsHeaderNames, canonical_fingerprint, decode_fingerprint

_PRINTABLE = re.compile(r"^[\x21-\x7e]*$")
_COMMA_IN_DNS_NAME = "a list of DNS names: it holds a DNS SAN containing a comma, which no DNS name does"


class ClientCertificate(NamedTuple):
    """What the load balancer reported about a verified client certificate."""

    client_id: str
    sha256_fingerprint: str  # canonical standard base64, unpadded, as the load balancer sends it
    serial_number: str
    spiffe_id: str
    dns_sans: tuple[str, ...]
    uri_sans: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None

    @property
    def x5t_s256(self) -> str:
        """RFC 8705 certificate thumbprint (base64url of the SHA-256 of the DER)."""
        return base64.urlsafe_b64encode(decode_fingerprint(self.sha256_fingerprint)).decode().rstrip("=")


def authenticate(reported: CertificateHeaders, names: MtlsHeaderNames, now: datetime) -> ClientCertificate:
    """Return the verified client certificate or raise ``OAuthError`` (401 invalid_client).

    ``names`` name the headers in the refusals' descriptions."""
    present = reported.present
    if present is None:
        raise invalid_client(
            f"The request carries no {names.present} header: it did not come through the mTLS "
            "load balancer, or the backend service lacks its custom request headers",
            Reason.MTLS_HEADERS_MISSING,
        )
    if present.strip().lower() != "true":
        raise invalid_client(
            f"A client certificate is required ({names.present}: {_shown(present)})",
            Reason.NO_CLIENT_CERTIFICATE,
        )
    error = (reported.error or "").strip()
    verified = (reported.chain_verified or "").strip()
    if verified.lower() != "true":
        detail = f"; load balancer error: {_shown(error)}" if error else ""
        raise invalid_client(
            f"The client certificate did not pass verification against the trust config "
            f"({names.chain_verified}: {_shown(verified)}{detail})",
            Reason.CERTIFICATE_NOT_VERIFIED,
        )
    if error:
        raise invalid_client(
            f"The load balancer reported a client certificate error: {_shown(error)}",
            Reason.CERTIFICATE_ERROR,
        )

    fingerprint = _fingerprint(reported.sha256_fingerprint, names.sha256_fingerprint)
    serial = _printable(reported.serial_number, names.serial_number)
    spiffe_id = _spiffe_id(reported.spiffe_id, names.spiffe_id)
    dns_sans = _san_list(reported.dnsname_sans, names.dnsname_sans, dns=True)
    uri_sans = _san_list(reported.uri_sans, names.uri_sans, dns=False)
    not_before = _timestamp(reported.valid_not_before, names.valid_not_before)
    not_after = _timestamp(reported.valid_not_after, names.valid_not_after)
    _check_validity(not_before, not_after, now)
    by_header = {names.sha256_fingerprint: fingerprint, names.spiffe_id: spiffe_id,
                 names.dnsname_sans: dns_sans[0] if dns_sans else "", names.uri_sans: uri_sans[0] if uri_sans else ""}
    client_id = _client_id(by_header[names.client_id], names)
    return ClientCertificate(client_id, fingerprint, serial, spiffe_id, dns_sans, uri_sans, not_before, not_after)


def parse_san_header(value: str, *, dns: bool) -> tuple[str, ...]:
    """Decode a SAN header: each SAN base64-encoded on its own, the encodings separated by commas.

    Base64 has no comma, so only a raw comma separates; a comma inside a decoded SAN is data (a URI
    may hold one) and never splits it, or a certificate with one URI SAN could claim a second one
    it was not issued. A DNS name cannot hold a comma: a decoded DNS SAN with one is malformed.
    """
    value = value.strip()
    if not value:
        return ()
    sans = tuple(_decode_text(item.strip()) for item in value.split(","))
    if dns and any("," in san for san in sans):
        raise CommaInDnsName("a DNS SAN containing a comma")
    if any(not san or not _PRINTABLE.match(san) for san in sans):
        raise MalformedValue("empty or non-printable SAN")
    return sans


def _client_id(client_id: str, names: MtlsHeaderNames) -> str:
    """The value of the MTLS_HEADER_CLIENT_ID header, if it can name a client (a subject WIF accepts)."""
    if not client_id:
        raise invalid_client(
            f"The client certificate was verified, but {names.client_id} (configured as "
            "MTLS_HEADER_CLIENT_ID) is empty, so it names no client",
            Reason.CLIENT_ID_MISSING,
        )
    size = len(client_id.encode())
    if size > MAX_SUBJECT_BYTES:
        raise invalid_client(
            f"The client id from {names.client_id} is {size} bytes; workload identity "
            f"federation accepts at most {MAX_SUBJECT_BYTES} bytes in google.subject",
            Reason.CLIENT_ID_TOO_LONG,
        )
    prefix = reserved_prefix(client_id)
    if prefix is not None:
        raise invalid_client(
            f"The client id from {names.client_id} ({_shown(client_id, 40)}) starts with {prefix!r}, which "
            "only another flow's subjects do: it would share their Google principal",
            Reason.CLIENT_ID_RESERVED,
        )
    return client_id


def _check_validity(not_before: datetime | None, not_after: datetime | None, now: datetime) -> None:
    # The load balancer already refuses expired chains; checking again costs
    # nothing and keeps a stale or forged header from minting tokens.
    if not_after is not None and now >= not_after:
        raise invalid_client(
            f"The client certificate expired at {not_after.isoformat()}",
            Reason.CERTIFICATE_EXPIRED,
        )
    if not_before is not None and now < not_before:
        raise invalid_client(
            f"The client certificate is not valid before {not_before.isoformat()}",
            Reason.CERTIFICATE_NOT_YET_VALID,
        )


def _fingerprint(value: str | None, name: str) -> str:
    try:
        return canonical_fingerprint(value or "")
    except MalformedValue:
        raise _malformed(name, value, "a base64 SHA-256 fingerprint (32 bytes)") from None


def _san_list(value: str | None, name: str, *, dns: bool) -> tuple[str, ...]:
    try:
        return parse_san_header(value or "", dns=dns)
    except CommaInDnsName:
        raise _malformed(name, value, _COMMA_IN_DNS_NAME) from None
    except MalformedValue:
        raise _malformed(name, value, "a comma-separated list of base64-encoded SANs") from None


def _spiffe_id(value: str | None, name: str) -> str:
    spiffe_id = _printable(value, name)
    if spiffe_id and not spiffe_id.startswith("spiffe://"):
        raise _malformed(name, value, "a spiffe:// URI")
    return spiffe_id


def _printable(value: str | None, name: str) -> str:
    text = (value or "").strip()
    if not _PRINTABLE.match(text):
        raise _malformed(name, value, "printable ASCII")
    return text


def _timestamp(value: str | None, name: str) -> datetime | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _malformed(name, value, "an RFC 3339 timestamp with offset")
    return moment


def _decode_text(item: str) -> str:
    try:
        raw = base64.b64decode(item + "=" * (-len(item) % 4), validate=True)
        return raw.decode("utf-8")
    except ValueError as error:  # binascii.Error, a character outside ASCII, UnicodeDecodeError
        raise MalformedValue("not base64 text") from error


def _malformed(name: str, value: str | None, expected: str) -> OAuthError:
    return invalid_client(
        f"The {name} header is not {expected} ({name}: {_shown(value or '')})",
        Reason.MALFORMED_CERTIFICATE_HEADER,
    )


def _shown(value: str, limit: int = 80) -> str:
    """A header value quoted for an error description: bounded and printable."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in value[:limit])
    return repr(text + ("..." if len(value) > limit else ""))
