"""Every refusal reason, provoked end to end, with the audit line and the client's error checked;
and the documented troubleshooting queries (README and docs/) checked against the audit lines these attempts wrote."""

from __future__ import annotations

import base64
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools.local import RUNTIME_SERVICE_ACCOUNT, WORKLOAD_SERVICE_ACCOUNT
from tests.e2e.conftest import JWT_BEARER, SCOPE
from tests.support import verified_headers
from token_service.errors import Reason

ROOT = Path(__file__).resolve().parents[2]
TROUBLESHOOTING = (ROOT / "docs" / "troubleshooting.md").read_text()
# Every page a user reads: the queries they copy from any of them must match real audit lines.
DOCUMENTATION = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
SEEN_LABELS: list[dict[str, str]] = []


def direct(stack, headers: dict[str, str], data: dict[str, str] | None = None, proxy_secret: bool = True):
    """Headers the gateway would never send, straight to the function; with the proxy secret, as a load
    balancer that sent them would (the function still answers every case), without it as an internal
    caller that bypassed the load balancer."""
    import requests

    session = requests.Session()
    session.trust_env = False
    trace = base64.b16encode(__import__("os").urandom(16)).decode().lower()
    sent = {**headers, **(stack.proxy_secret_headers if proxy_secret else {}),
            "traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    response = session.post(f"{stack.function_url}/token", data=data or {"grant_type": "client_credentials"},
                            headers=sent, timeout=30)
    return response, stack.audit_entry(trace)


def with_headers(**overrides):
    headers = verified_headers(**overrides)
    return {name: value for name, value in headers.items() if value is not None}


def provoke(reason: Reason, stack, spiffe_stack, uri_stack, policy_stack, iam_stack, issuer):
    exchange = {"grant_type": "client_credentials", "scope": SCOPE, "service_account": WORKLOAD_SERVICE_ACCOUNT}
    match reason:
        case Reason.MALFORMED_REQUEST:
            return stack.post_token(data={"grant_type": "client_credentials", "format": "xml"})
        case Reason.BODY_TOO_LARGE:
            return stack.post_token(data={"grant_type": "client_credentials", "x": "a" * 20000})
        case Reason.HEADERS_TOO_LARGE:
            return direct(stack, with_headers(**{f"X-Filler-{index}": "x" for index in range(120)}))
        case Reason.UNSUPPORTED_GRANT_TYPE:
            return stack.post_token(data={"grant_type": "password"})
        case Reason.FLOW_DISABLED:
            return stack.post_token(data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"})
        case Reason.MTLS_HEADERS_MISSING:
            return direct(stack, {})
        case Reason.NO_CLIENT_CERTIFICATE:
            return stack.post_token(None)
        case Reason.CERTIFICATE_NOT_VERIFIED:
            return stack.post_token("no-eku")
        case Reason.CERTIFICATE_ERROR:
            return direct(stack, with_headers(**{"X-Client-Cert-Error": "client_cert_uri_sans_exceeded_size_limit"}))
        case Reason.CERTIFICATE_EXPIRED:
            return direct(stack, with_headers(**{"X-Client-Cert-Valid-Not-After": "2020-01-01T00:00:00+00:00"}))
        case Reason.CERTIFICATE_NOT_YET_VALID:
            return direct(stack, with_headers(**{"X-Client-Cert-Valid-Not-Before": "2099-01-01T00:00:00+00:00"}))
        case Reason.MALFORMED_CERTIFICATE_HEADER:
            return direct(stack, with_headers(**{"X-Client-Cert-Hash": "not-a-fingerprint"}))
        case Reason.CLIENT_ID_MISSING:
            return spiffe_stack.post_token("bare")
        case Reason.CLIENT_ID_TOO_LONG:
            return direct(spiffe_stack, with_headers(**{"X-Client-Cert-SPIFFE": "spiffe://td/" + "a" * 130}))
        case Reason.CLIENT_ID_RESERVED:
            return uri_stack.post_token("uri-secret")
        case Reason.POLICY_DENIED:
            return policy_stack.post_token("bare")
        case Reason.UNTRUSTED_ISSUER:
            return policy_stack.post_token(None, data={"grant_type": JWT_BEARER,
                                                       "assertion": issuer.mint(audience="x", iss="https://evil")})
        case Reason.INVALID_ASSERTION:
            return policy_stack.post_token(None, data={"grant_type": JWT_BEARER,
                                                       "assertion": issuer.mint(audience="https://wrong")})
        case Reason.ASSERTION_REPLAYED:
            assertion = issuer.mint(audience=policy_stack.url)
            policy_stack.post_token(None, data={"grant_type": JWT_BEARER, "assertion": assertion})
            return policy_stack.post_token(None, data={"grant_type": JWT_BEARER, "assertion": assertion})
        case Reason.ISSUER_KEYS_UNAVAILABLE:
            return policy_stack.post_token(None, data={"grant_type": JWT_BEARER, "assertion": issuer.mint(
                audience=policy_stack.url, iss="http://127.0.0.1:9")})
        case Reason.INVALID_CLIENT_SECRET:
            return policy_stack.post_token(None, data={"grant_type": "client_credentials",
                                                       "client_id": "legacy-scanner", "client_secret": "wrong"})
        case Reason.RATE_LIMITED:
            for _ in range(10):
                policy_stack.post_token(None, data={"grant_type": "client_credentials", "client_id": "guesser",
                                                    "client_secret": "wrong"})
            return policy_stack.post_token(None, data={"grant_type": "client_credentials", "client_id": "guesser",
                                                       "client_secret": "wrong"})
        case Reason.STS_REFUSED:
            provider = next(iter(stack.emulator.providers.values()))
            provider.disabled = True
            try:
                return stack.post_token(data=exchange)
            finally:
                provider.disabled = False
        case Reason.IMPERSONATION_REFUSED:
            return stack.post_token(data={**exchange, "service_account": "nobody@p.iam.gserviceaccount.com"})
        case Reason.UPSTREAM_UNAVAILABLE:
            stack.emulator.inject("sts", *([503] * 100))
            try:
                return stack.post_token(data=exchange)
            finally:
                stack.emulator._faults.clear()
        case Reason.INSTANCE_BUSY:
            # uri_stack holds one request that waits: a hung exchange takes it, and the next is refused at once.
            uri_stack.emulator.inject("sts", "hang:3")
            with ThreadPoolExecutor(max_workers=1) as pool:
                holding = pool.submit(uri_stack.post_token, "uri-plain", exchange)
                time.sleep(0.5)
                try:
                    return uri_stack.post_token("uri-plain", exchange)
                finally:
                    holding.result()
                    uri_stack.emulator._faults.clear()
        case Reason.NOT_THROUGH_LOAD_BALANCER:
            return direct(stack, with_headers(), proxy_secret=False)
        case Reason.SIGNING_FAILED:
            saved = iam_stack.emulator.bindings.pop(RUNTIME_SERVICE_ACCOUNT)
            try:
                return iam_stack.post_token()
            finally:
                iam_stack.emulator.bindings[RUNTIME_SERVICE_ACCOUNT] = saved
    raise AssertionError(f"no way to provoke {reason}")


# internal_error is what a bug produces; tests/test_dispatch.py forces one in-process.
# replay_store_unavailable takes a Redis to kill: tests/e2e/test_shared_state.py provokes it, with the same checks.
PROVOKED = [reason for reason in Reason if reason not in (Reason.INTERNAL_ERROR, Reason.REPLAY_STORE_UNAVAILABLE)]


@pytest.mark.parametrize("reason", PROVOKED, ids=[reason.value for reason in PROVOKED])
def test_each_reason_end_to_end(reason, stack, spiffe_stack, uri_stack, policy_stack, iam_stack, issuer):
    response, audit = provoke(reason, stack, spiffe_stack, uri_stack, policy_stack, iam_stack, issuer)
    labels = audit["logging.googleapis.com/labels"]
    SEEN_LABELS.append(labels)
    assert labels["outcome"] == "refused" and labels["reason"] == reason.value
    assert labels["status"] == str(response.status_code) and response.status_code != 200
    body = response.json()
    assert body["error"] == labels["error"]
    assert body["error_description"].endswith(f"(reason: {reason.value})")
    assert "id_token" not in body and "access_token" not in body


def test_every_reason_has_a_troubleshooting_row():
    table = TROUBLESHOOTING[TROUBLESHOOTING.index("## Refusal reasons"):
                            TROUBLESHOOTING.index("## When the function never saw the request")]
    for reason in Reason:
        assert f"`{reason.value}`" in table, reason


def test_readme_queries_use_labels_that_real_audit_lines_have(iam_stack):
    """The label names (and reason values) in the documented queries exist in real audit lines."""
    assert SEEN_LABELS, "run with the end-to-end reasons test"
    # As deployed (the cache of Google's tokens on), so the line has every label of an exchange.
    issued = iam_stack.post_token(data={"grant_type": "client_credentials", "scope": SCOPE,
                                        "service_account": WORKLOAD_SERVICE_ACCOUNT})[1]
    assert len(re.findall(r'(?<![\w.])labels\.reason="', TROUBLESHOOTING)) > 20
    queries = re.findall(r'(?<![\w.])labels\.("?[\w/.-]+"?)="([^"]*)"', DOCUMENTATION)
    assert len(queries) > 20
    names_seen = set().union(*(labels.keys() for labels in SEEN_LABELS)) | set(
        issued["logging.googleapis.com/labels"])
    for name, value in queries:
        name = name.strip('"')
        assert name in names_seen, f"the documentation queries labels.{name}, which no audit line has"
        if name == "reason":
            assert value in {reason.value for reason in Reason}, value
