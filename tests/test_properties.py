"""Property-based tests: every parser answers any input with a value or a protocol error, nothing else;
and a fuzz run of 10,000 generated token requests through dispatch yields no 5xx and no unearned token."""

from __future__ import annotations

import contextlib
import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import FINGERPRINT, authenticate, b64, verified_headers
from token_service import mtls
from token_service.dispatch import HttpRequest, dispatch
from token_service.errors import MalformedValue, OAuthError, Reason
from token_service.exchange import parse_exchange_request
from token_service.token_request import parse_token_request, parse_trace

HEADER_NAMES = list(verified_headers())
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
header_values = st.one_of(text, st.sampled_from(["true", "false", "TRUE", "", FINGERPRINT, b64("a.example"),
                                                 "2099-01-01T00:00:00+00:00", "spiffe://x/y", ","]))


@given(st.binary(max_size=2000), st.one_of(st.none(), text,
                                          st.just("application/x-www-form-urlencoded; charset=utf-8")))
def test_form_parser_never_fails_unexpectedly(body, content_type):
    try:
        request = parse_token_request(body, content_type)
    except OAuthError as error:
        assert error.status in (400, 413)
    else:
        assert isinstance(request.parameters, dict)


@given(text, st.booleans())
def test_san_parser_returns_printable_sans_or_value_error(value, dns):
    try:
        sans = mtls.parse_san_header(value, dns=dns)
    except MalformedValue:
        return
    assert all(san and san.isprintable() for san in sans)
    assert not sans or len(sans) == value.count(",") + 1  # only a raw comma separates
    assert not dns or not any("," in san for san in sans)


@given(text)
def test_fingerprint_decoder_returns_32_bytes_or_value_error(value):
    with contextlib.suppress(MalformedValue):
        assert len(mtls.decode_fingerprint(value)) == 32


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values))
def test_mtls_flow_answers_any_headers_with_a_certificate_or_invalid_client(overrides, names):
    headers = {**verified_headers(), **overrides}
    from datetime import UTC, datetime

    try:
        certificate = authenticate(headers, names, datetime(2026, 6, 1, tzinfo=UTC))
    except OAuthError as error:
        assert (error.status, error.error) == (401, "invalid_client")
        assert error.description.isprintable() and len(error.description) < 500
    else:
        assert 0 < len(certificate.client_id.encode()) <= 127


@given(st.dictionaries(st.sampled_from(["scope", "service_account", "audience"]), text))
def test_exchange_parameters(parameters):
    try:
        parse_exchange_request(parameters)
    except OAuthError as error:
        assert error.status == 400


@given(st.dictionaries(st.sampled_from(["traceparent", "x-cloud-trace-context"]), text))
def test_trace_parser(headers):
    trace = parse_trace(headers)
    assert trace is None or all(ch in string.hexdigits for ch in trace.trace_id)


# --- the fuzz run ---------------------------------------------------------------------------------

form_values = st.one_of(text, st.sampled_from(["client_credentials", "external_credential",
                                               "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                               "https://www.googleapis.com/auth/cloud-platform"]))
form_pairs = st.lists(st.tuples(st.sampled_from(["grant_type", "format", "scope", "service_account", "audience",
                                                 "assertion", "client_id", "client_secret", "x"]), form_values),
                      max_size=6)


def encode(pairs) -> bytes:
    from urllib.parse import urlencode

    return urlencode(pairs).encode()


requests_strategy = st.tuples(
    st.one_of(form_pairs.map(encode), st.binary(max_size=300)),
    st.dictionaries(st.sampled_from(HEADER_NAMES), header_values),
    st.sampled_from(["application/x-www-form-urlencoded", "application/json", "", "text/plain; charset=x"]),
    st.sampled_from(["POST", "GET", "PUT", "HEAD"]),
    st.sampled_from(["/token", "/", "/jwks", "/.well-known/openid-configuration", "/x", "/token/"]),
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
@given(generated=requests_strategy)
def test_fuzz_10000_requests_no_5xx_no_unearned_token(service, audit, generated):
    body, overrides, content_type, method, path = generated
    headers = {**verified_headers(), **overrides, "content-type": content_type}
    before = len(audit.stream.getvalue().splitlines())
    response = dispatch(service, HttpRequest(method, path, headers, body))
    assert response.status < 500, response.body
    if path == "/token" and method == "POST":
        document = json.loads(response.body)
        lines = audit.stream.getvalue().splitlines()[before:]
        assert len(lines) == 1, "exactly one audit line per attempt"
        if response.status == 200:
            # A token only for a verified certificate, with the right grant type.
            assert headers.get("x-client-cert-present", "").strip().lower() == "true"
            assert headers.get("x-client-cert-chain-verified", "").strip().lower() == "true"
            assert "id_token" in document
            assert json.loads(lines[0])["logging.googleapis.com/labels"]["outcome"] == "issued"
        else:
            assert "id_token" not in document and "access_token" not in document
            labels = json.loads(lines[0])["logging.googleapis.com/labels"]
            assert labels["reason"] in {reason.value for reason in Reason}
