from datetime import UTC, datetime

import pytest

from tests.support import FINGERPRINT, authenticate, b64, verified_headers
from token_service.config import load_settings
from token_service.errors import MalformedValue, OAuthError, Reason
from token_service.flows import rfc8705_mtls as mtls
from token_service.flows.authentication import certificate_client
from token_service.policy import parse_policy
from token_service.request import decode_fingerprint

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def refusal(headers, names) -> OAuthError:
    with pytest.raises(OAuthError) as raised:
        authenticate(headers, names, NOW)
    assert raised.value.status == 401 and raised.value.error == "invalid_client"
    return raised.value


def test_verified_certificate(names):
    certificate = authenticate(verified_headers(), names, NOW)
    assert certificate.client_id == FINGERPRINT
    assert certificate.spiffe_id == "spiffe://example.net/ns/prod/sa/meter"
    assert certificate.dns_sans == ("device-1.example.net",)
    assert certificate.uri_sans == ("https://device.example.net/1",)
    assert certificate.serial_number == "00:c9:77:71:db"
    assert certificate.not_after == datetime(2099, 1, 1, tzinfo=UTC)


def test_present_and_verified_are_case_insensitive(names):
    headers = verified_headers(**{"X-Client-Cert-Present": "TRuE", "X-Client-Cert-Chain-Verified": "True"})
    assert authenticate(headers, names, NOW).client_id == FINGERPRINT


def test_missing_present_header_names_the_header_and_the_likely_cause(names):
    headers = verified_headers()
    del headers["x-client-cert-present"]
    error = refusal(headers, names)
    assert error.reason is Reason.MTLS_HEADERS_MISSING
    assert "X-Client-Cert-Present" in error.description and "load balancer" in error.description


@pytest.mark.parametrize("value", ["false", "", "yes", "true,true"])
def test_no_certificate(names, value):
    error = refusal(verified_headers(**{"X-Client-Cert-Present": value}), names)
    assert error.reason is Reason.NO_CLIENT_CERTIFICATE


def test_unverified_chain_reports_the_load_balancer_error(names):
    headers = verified_headers(
        **{"X-Client-Cert-Chain-Verified": "false", "X-Client-Cert-Error": "client_cert_chain_invalid_eku"}
    )
    error = refusal(headers, names)
    assert error.reason is Reason.CERTIFICATE_NOT_VERIFIED
    assert "client_cert_chain_invalid_eku" in error.description


def test_verified_header_absent_counts_as_unverified(names):
    headers = verified_headers()
    del headers["x-client-cert-chain-verified"]
    assert refusal(headers, names).reason is Reason.CERTIFICATE_NOT_VERIFIED


def test_error_header_refuses_even_a_verified_chain(names):
    headers = verified_headers(**{"X-Client-Cert-Error": "client_cert_dnsname_sans_exceeded_size_limit"})
    error = refusal(headers, names)
    assert error.reason is Reason.CERTIFICATE_ERROR
    assert "client_cert_dnsname_sans_exceeded_size_limit" in error.description


def test_fingerprint_is_compared_padding_insensitively(names):
    padded = authenticate(verified_headers(**{"X-Client-Cert-Hash": FINGERPRINT + "="}), names, NOW)
    assert padded.client_id == FINGERPRINT
    assert padded.sha256_fingerprint == FINGERPRINT


@pytest.mark.parametrize("value", ["", "not base64!", b64("short"), "abc,def", FINGERPRINT[:-4]])
def test_malformed_fingerprint(names, value):
    error = refusal(verified_headers(**{"X-Client-Cert-Hash": value}), names)
    assert error.reason is Reason.MALFORMED_CERTIFICATE_HEADER
    assert "X-Client-Cert-Hash" in error.description


def test_a_non_canonical_spelling_of_the_same_digest_names_the_same_client(names):
    """Base64 of 32 bytes ends in a character whose two low bits are padding; a decoder ignores them, so
    other spellings of the same digest exist. They must not yield another client id or miss a pinned rule."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(FINGERPRINT[-1])
    for variant in (FINGERPRINT[:-1] + alphabet[last | 1], FINGERPRINT[:-1] + alphabet[last | 3] + "="):
        assert variant.rstrip("=") != FINGERPRINT and decode_fingerprint(variant) == decode_fingerprint(
            FINGERPRINT)
        certificate = authenticate(verified_headers(**{"X-Client-Cert-Hash": variant}), names, NOW)
        assert certificate.client_id == certificate.sha256_fingerprint == FINGERPRINT
        pinned = parse_policy({"rules": [{"name": "pinned", "certificate": {"sha256": FINGERPRINT}}]})
        assert pinned.decide(certificate_client(certificate).facts, (), None, None).rule == "pinned"


def test_cnf_thumbprint_is_base64url_of_the_same_digest(names):
    certificate = authenticate(verified_headers(), names, NOW)
    assert decode_fingerprint(certificate.sha256_fingerprint) == decode_fingerprint(
        certificate.x5t_s256.replace("-", "+").replace("_", "/")
    )
    assert "=" not in certificate.x5t_s256


def test_san_headers_are_one_base64_encoding_per_san_separated_by_commas():
    assert mtls.parse_san_header(b64("dns-1") + "," + b64("dns-2"), dns=True) == ("dns-1", "dns-2")
    assert mtls.parse_san_header(b64("dns-1").rstrip("=") + "," + b64("dns-2").rstrip("="), dns=True) == (
        "dns-1", "dns-2")  # unpadded items


@pytest.mark.parametrize(
    ("header", "sans"),
    [
        (b64("https://a.example/x,https://admin.example/"), ("https://a.example/x,https://admin.example/",)),
        (b64("urn:a,b") + "," + b64("urn:c"), ("urn:a,b", "urn:c")),
    ],
)
def test_a_comma_inside_a_decoded_uri_san_is_data_not_a_separator(names, header, sans):
    assert mtls.parse_san_header(header, dns=False) == sans
    certificate = authenticate(verified_headers(**{"X-Client-Cert-URI-SANs": header}), names, NOW)
    assert certificate.uri_sans == sans


@pytest.mark.parametrize(
    "header", [b64("a.example,admin.example"), b64("a.example") + "," + b64("b.example,admin.example"),
               b64("dns-1, dns-2")])
def test_a_dns_san_containing_a_comma_is_refused(names, header):
    with pytest.raises(MalformedValue):
        mtls.parse_san_header(header, dns=True)
    error = refusal(verified_headers(**{"X-Client-Cert-DNSName-SANs": header}), names)
    assert error.reason is Reason.MALFORMED_CERTIFICATE_HEADER
    assert "X-Client-Cert-DNSName-SANs" in error.description and "DNS SAN containing a comma" in error.description


@pytest.mark.parametrize("header", ["%%%", b64(",,"), b64("a") + ",", b64("bad\x01name"), b64("a\nb")])
def test_malformed_san_headers(names, header):
    with pytest.raises(MalformedValue):
        mtls.parse_san_header(header, dns=True)
    error = refusal(verified_headers(**{"X-Client-Cert-DNSName-SANs": header}), names)
    assert error.reason is Reason.MALFORMED_CERTIFICATE_HEADER


def test_empty_san_headers_mean_no_sans(names):
    headers = verified_headers(**{"X-Client-Cert-DNSName-SANs": "", "X-Client-Cert-URI-SANs": ""})
    certificate = authenticate(headers, names, NOW)
    assert certificate.dns_sans == () and certificate.uri_sans == ()


def test_spiffe_must_be_a_spiffe_uri(names):
    error = refusal(verified_headers(**{"X-Client-Cert-SPIFFE": "https://not-spiffe"}), names)
    assert error.reason is Reason.MALFORMED_CERTIFICATE_HEADER


def test_expired_certificate_is_refused_even_if_the_header_says_verified(names):
    error = refusal(verified_headers(**{"X-Client-Cert-Valid-Not-After": "2026-05-31T23:59:59+00:00"}), names)
    assert error.reason is Reason.CERTIFICATE_EXPIRED


def test_the_same_headers_are_checked_against_the_time_of_each_request(names):
    """Parsed header values are remembered per certificate; the validity check never is."""
    headers = verified_headers(**{"X-Client-Cert-Valid-Not-After": "2026-06-01T12:00:00+00:00"})
    assert authenticate(headers, names, NOW).client_id == FINGERPRINT
    with pytest.raises(OAuthError) as raised:
        authenticate(headers, names, datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    assert raised.value.reason is Reason.CERTIFICATE_EXPIRED
    assert authenticate(headers, names, NOW).client_id == FINGERPRINT


def test_a_malformed_header_is_refused_every_time(names):
    headers = verified_headers(**{"X-Client-Cert-Serial-Number": "00:c9\x07"})
    for _ in range(2):
        assert refusal(headers, names).reason is Reason.MALFORMED_CERTIFICATE_HEADER


def test_not_yet_valid_certificate(names):
    error = refusal(verified_headers(**{"X-Client-Cert-Valid-Not-Before": "2026-06-02T00:00:00Z"}), names)
    assert error.reason is Reason.CERTIFICATE_NOT_YET_VALID


@pytest.mark.parametrize("value", ["yesterday", "2026-01-01", "2026-01-01T00:00:00"])
def test_validity_must_be_rfc3339_with_offset(names, value):
    error = refusal(verified_headers(**{"X-Client-Cert-Valid-Not-After": value}), names)
    assert error.reason is Reason.MALFORMED_CERTIFICATE_HEADER


def test_serial_with_control_characters_is_refused(names):
    error = refusal(verified_headers(**{"X-Client-Cert-Serial-Number": "00:01\x00"}), names)
    assert error.reason is Reason.MALFORMED_CERTIFICATE_HEADER


def test_client_id_from_spiffe_header(environ):
    environ["MTLS_HEADER_CLIENT_ID"] = "X-Client-Cert-SPIFFE"
    names = load_settings(environ).mtls_headers
    assert authenticate(verified_headers(), names, NOW).client_id == "spiffe://example.net/ns/prod/sa/meter"


def test_client_id_from_a_san_header_is_the_decoded_first_san(environ):
    environ["MTLS_HEADER_CLIENT_ID"] = "X-Client-Cert-DNSName-SANs"
    names = load_settings(environ).mtls_headers
    headers = verified_headers(**{"X-Client-Cert-DNSName-SANs": b64("a.example") + "," + b64("b.example")})
    assert authenticate(headers, names, NOW).client_id == "a.example"


def test_empty_client_id_header(environ):
    environ["MTLS_HEADER_CLIENT_ID"] = "X-Client-Cert-SPIFFE"
    names = load_settings(environ).mtls_headers
    error = refusal(verified_headers(**{"X-Client-Cert-SPIFFE": ""}), names)
    assert error.reason is Reason.CLIENT_ID_MISSING
    assert "MTLS_HEADER_CLIENT_ID" in error.description


def test_client_id_over_127_bytes_is_refused_before_google_would(environ):
    environ["MTLS_HEADER_CLIENT_ID"] = "X-Client-Cert-SPIFFE"
    names = load_settings(environ).mtls_headers
    fits = "spiffe://example.net/" + "a" * (127 - len("spiffe://example.net/"))
    assert authenticate(verified_headers(**{"X-Client-Cert-SPIFFE": fits}), names, NOW).client_id == fits
    error = refusal(verified_headers(**{"X-Client-Cert-SPIFFE": fits + "b"}), names)
    assert error.reason is Reason.CLIENT_ID_TOO_LONG
    assert "128 bytes" in error.description and "127" in error.description


@pytest.mark.parametrize("header", ["X-Client-Cert-URI-SANs", "X-Client-Cert-DNSName-SANs"])
@pytest.mark.parametrize("client_id", ["secret:ci-client", "jwt:ext:system:serviceaccount:payments:api",
                                       "JWT-SHA256:prod-cluster:AAAA", "Secret:ci-client"])
def test_a_certificate_cannot_take_a_subject_of_another_flow(environ, header, client_id):
    environ["MTLS_HEADER_CLIENT_ID"] = header
    names = load_settings(environ).mtls_headers
    error = refusal(verified_headers(**{header: b64(client_id)}), names)
    assert error.reason is Reason.CLIENT_ID_RESERVED and error.status == 401
    assert "another flow" in error.description


def test_a_certificate_subject_merely_containing_a_reserved_word_is_its_own(environ):
    environ["MTLS_HEADER_CLIENT_ID"] = "X-Client-Cert-URI-SANs"
    names = load_settings(environ).mtls_headers
    headers = verified_headers(**{"X-Client-Cert-URI-SANs": b64("urn:secret:ci-client")})
    assert authenticate(headers, names, NOW).client_id == "urn:secret:ci-client"


def test_descriptions_do_not_echo_unbounded_or_unprintable_values(names):
    error = refusal(verified_headers(**{"X-Client-Cert-Present": "x" * 5000 + "\x1b[31m"}), names)
    assert len(error.description) < 300 and "\x1b" not in error.description
