"""Each flow's subjects lie in their own namespace, within WIF's 127-byte google.subject."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from token_service.flows.subjects import (
    MAX_SUBJECT_BYTES,
    assertion_subject,
    reserved_prefix,
    secret_subject,
    subject_digest,
)

issuer_names = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,39}\Z")  # the policy's grammar for issuer names
client_ids = st.from_regex(r"\A[A-Za-z0-9._~-]{1,64}\Z")  # and for client-secret client ids
subjects = st.text(min_size=1, max_size=2000)


@given(issuer_names, subjects)
def test_every_assertion_subject_fits_and_names_its_flow(name, subject):
    result = assertion_subject(name, subject)
    assert len(result.encode("utf-8", "surrogatepass")) <= MAX_SUBJECT_BYTES
    assert result.startswith(("jwt:", "jwt-sha256:"))
    assert reserved_prefix(result) is not None


@given(issuer_names, subjects, issuer_names, subjects)
def test_two_sources_never_share_an_assertion_subject(name, subject, other_name, other_subject):
    if (name, subject) != (other_name, other_subject):
        assert assertion_subject(name, subject) != assertion_subject(other_name, other_subject)


def test_the_readable_form_is_kept_while_it_fits_and_the_digest_is_documented():
    readable = "system:serviceaccount:payments:api"
    assert assertion_subject("prod-cluster", readable) == f"jwt:prod-cluster:{readable}"
    fits = "s" * (MAX_SUBJECT_BYTES - len("jwt:prod-cluster:"))
    assert assertion_subject("prod-cluster", fits) == f"jwt:prod-cluster:{fits}"
    # One byte more: the digest form, computable with
    #   printf %s "$SUB" | openssl dgst -sha256 -binary | basenc --base64url | tr -d =
    expected = base64.urlsafe_b64encode(hashlib.sha256((fits + "s").encode()).digest()).decode().rstrip("=")
    assert subject_digest(fits + "s") == expected
    assert assertion_subject("prod-cluster", fits + "s") == f"jwt-sha256:prod-cluster:{expected}"


@given(client_ids)
def test_secret_subjects_are_prefixed_and_fit(client_id):
    result = secret_subject(client_id)
    assert result == "secret:" + client_id and len(result) <= MAX_SUBJECT_BYTES
    assert reserved_prefix(result) == "secret:"


def test_certificate_values_outside_the_reserved_prefixes_are_free():
    for value in ("spiffe://example.net/ns/payments", "api.example.net", "urn:jwt:x", "secretary.example",
                  "https://secret.example/", "m9jYQ/4m0bPV3+Bm8b5pwbC6bBQb7Q3RfS1sGaBqJ8k"):
        assert reserved_prefix(value) is None
    assert reserved_prefix("SECRET:x") == "secret:" and reserved_prefix("jwt-sha256:a:b") == "jwt-sha256:"
