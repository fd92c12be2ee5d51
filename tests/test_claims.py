from datetime import UTC, datetime

from tests.support import FINGERPRINT
from token_service.flows.proof_claims import assertion_proof, certificate_proof
from token_service.flows.rfc8705_mtls import ClientCertificate
from token_service.issuing.claims import id_token_claims


def certificate(**overrides) -> ClientCertificate:
    values = dict(
        client_id=FINGERPRINT, sha256_fingerprint=FINGERPRINT, serial_number="00:01", spiffe_id="",
        dns_sans=("a.example", "b.example"), uri_sans=(), not_before=None,
        not_after=datetime(2099, 1, 1, tzinfo=UTC),
    )
    values.update(overrides)
    return ClientCertificate(**values)


def claims_for(proof, extra=None):
    return id_token_claims(
        issuer="https://issuer", audience="https://iam.googleapis.com/x", flow="xlb-mtls-client-credentials",
        client_id=FINGERPRINT, issued_at=1_700_000_000, expires_at=1_700_000_300, proof_claims=proof,
        extra_claims=extra,
    )


def test_claims_match_the_documented_token():
    claims = claims_for(certificate_proof(certificate())).payload
    assert claims["iss"] == "https://issuer"
    assert claims["aud"] == "https://iam.googleapis.com/x"
    assert claims["sub"] == claims["client_id"] == FINGERPRINT
    assert claims["exp"] - claims["iat"] == 300
    assert claims["amr"] == ["xlb-mtls-client-credentials"]
    assert claims["client"] == {
        "x5_spiffe": "", "x5_dnssan": "a.example", "x5_urisan": "", "x5_sha256": FINGERPRINT,
        "x5_serial": "00:01", "x5_dnssans": ["a.example", "b.example"], "x5_urisans": [],
    }
    assert set(claims["cnf"]) == {"x5t#S256"}


def test_every_token_has_a_fresh_jti():
    proof = certificate_proof(certificate())
    assert claims_for(proof).jti != claims_for(proof).jti


def test_extra_claims_never_replace_the_brokers_own():
    claims = claims_for({}, extra={"team": "payments", "sub": "forged", "iss": "forged"}).payload
    assert claims["team"] == "payments"
    assert claims["sub"] == FINGERPRINT and claims["iss"] == "https://issuer"


def test_assertion_proof_records_the_source():
    proof = assertion_proof("prod", {"iss": "https://k8s", "sub": "system:serviceaccount:a:b", "x": 1})
    assert proof["assertion"] == {"issuer": "prod", "iss": "https://k8s", "sub": "system:serviceaccount:a:b"}
    # The certificate keys are there, empty, so x5_* attribute mappings keep evaluating.
    assert proof["client"]["x5_sha256"] == "" and proof["client"]["x5_dnssans"] == []
