from datetime import UTC, datetime

from tests.support import FINGERPRINT
from token_service.claims import certificate_claims
from token_service.mtls import ClientCertificate


def certificate(**overrides) -> ClientCertificate:
    values = dict(
        client_id=FINGERPRINT, sha256_fingerprint=FINGERPRINT, serial_number="00:01", spiffe_id="",
        dns_sans=("a.example", "b.example"), uri_sans=(), not_before=None,
        not_after=datetime(2099, 1, 1, tzinfo=UTC),
    )
    values.update(overrides)
    return ClientCertificate(**values)


def claims_for(cert: ClientCertificate, issued_at: int = 1_700_000_000, validity: int = 300):
    return certificate_claims(
        issuer="https://issuer", audience="https://iam.googleapis.com/x", flow="xlb-mtls-client-credentials",
        certificate=cert, issued_at=issued_at, validity_seconds=validity,
    )


def test_claims_match_the_documented_token():
    claims = claims_for(certificate()).payload
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
    assert claims_for(certificate()).jti != claims_for(certificate()).jti


def test_token_never_outlives_the_certificate():
    soon = datetime.fromtimestamp(1_700_000_100, tz=UTC)
    claims = claims_for(certificate(not_after=soon))
    assert claims.expires_at == 1_700_000_100
