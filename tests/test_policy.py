"""The policy: every matcher, deny by default, what a rule allows, and refusing bad files at start."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

import pytest

from devtools.pki import mint_client
from token_service.errors import ConfigurationError, OAuthError
from token_service.flows.rfc6749_client_secret import hash_secret
from token_service.policy import ClientFacts, load_policy, parse_policy

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
FLEET = "spiffe://fleet.example/ns/meters/sa/meter-42"
SECRET_HASH = hash_secret("correct horse battery staple")
POLICY = textwrap.dedent(f"""\
    issuers:
      - name: prod-cluster
        issuer: https://container.googleapis.com/v1/projects/p/locations/l/clusters/prod
        single_use: false
    rules:
      - name: meters
        certificate:
          spiffe_id: spiffe://fleet.example/ns/meters/**
        allow:
          service_accounts: [meters@p.iam.gserviceaccount.com]
          scopes: [{SCOPE}]
          max_token_lifetime: 120
          claims: {{fleet: meters}}
      - name: pinned-gateway
        certificate:
          sha256: [gateway-fingerprint=]
      - name: lab-devices
        certificate:
          dns_san: "*.lab.example"
          uri_san: "urn:device:*"
      - name: payments
        assertion:
          issuer: prod-cluster
          subject: system:serviceaccount:payments:*
          claims:
            kubernetes.io/namespace: payments
        allow:
          audiences: ["https://*.a.run.app"]
          service_accounts: ["*@payments.iam.gserviceaccount.com"]
      - name: scanner
        client_secret:
          client_id: legacy-scanner
          secret_hashes: ["{SECRET_HASH}"]
    """)


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return load_policy(str(path))


def cert(**values) -> ClientFacts:
    return ClientFacts(flow="xlb-mtls-client-credentials", sha256=values.pop("sha256", "fp"), **values)


def k8s(subject="system:serviceaccount:payments:api", namespace="payments") -> ClientFacts:
    return ClientFacts(flow="jwt-bearer", issuer_name="prod-cluster", subject=subject, audiences=("b",),
                       claims={"kubernetes.io": {"namespace": namespace}})


def test_spiffe_trust_domain_glob_and_what_the_rule_allows(policy):
    grant = policy.decide(cert(spiffe_id=FLEET), (SCOPE,), "meters@p.iam.gserviceaccount.com", None)
    assert (grant.rule, grant.max_token_lifetime, grant.extra_claims) == ("meters", 120, {"fleet": "meters"})


def test_fingerprint_pin_is_padding_insensitive(policy):
    assert policy.decide(cert(sha256="gateway-fingerprint"), (), None, None).rule == "pinned-gateway"


def test_fingerprint_pin_matches_whatever_base64_spelling_of_the_digest_it_was_written_in():
    digest = bytes(range(32))
    canonical = base64.b64encode(digest).decode().rstrip("=")
    other_spelling = canonical[:-1] + chr(ord(canonical[-1]) + 1)  # the last character's padding bits set
    assert base64.b64decode(other_spelling + "=") == digest
    pinned = parse_policy({"rules": [{"name": "pinned", "certificate": {"sha256": other_spelling + "="}}]})
    assert pinned.decide(cert(sha256=canonical), (), None, None).rule == "pinned"


def test_dns_and_uri_san_globs_must_both_match(policy):
    assert policy.decide(cert(dns_sans=("x.lab.example",), uri_sans=("urn:device:7",)), (), None, None).rule == (
        "lab-devices")
    with pytest.raises(OAuthError):
        policy.decide(cert(dns_sans=("x.lab.example",)), (), None, None)


def test_assertion_subject_glob_and_claims(policy):
    assert policy.decide(k8s(), (), "api@payments.iam.gserviceaccount.com", None).rule == "payments"
    assert policy.decide(k8s(), (), None, "https://ledger-abc.a.run.app").rule == "payments"
    with pytest.raises(OAuthError):
        policy.decide(k8s(namespace="billing"), (), None, None)


def test_client_secret_rule(policy):
    facts = ClientFacts(flow="client-secret", secret_client_id="legacy-scanner")
    assert policy.decide(facts, (), None, None).rule == "scanner"


def test_deny_by_default_names_the_policy(policy):
    with pytest.raises(OAuthError) as raised:
        policy.decide(cert(spiffe_id="spiffe://other.example/x"), (), None, None)
    error = raised.value
    assert (error.status, error.error) == (403, "unauthorized_client")
    assert "policy" in error.description and dict(error.audit_labels)["policy_rule"] == ""


@pytest.mark.parametrize(
    ("facts", "scopes", "service_account", "audience", "fragment"),
    [
        (cert(spiffe_id=FLEET), ("https://www.googleapis.com/auth/devstorage.full_control",), None, None, "scope"),
        (cert(spiffe_id=FLEET), (SCOPE,), "admin@p.iam.gserviceaccount.com", None, "impersonating"),
        (cert(spiffe_id=FLEET), (), "meters@p.iam.gserviceaccount.com", "https://x.run.app", "audience"),
        (cert(sha256="gateway-fingerprint"), (SCOPE,), None, None, "scope"),  # allow nothing by default
    ],
)
def test_a_matching_rule_limits_what_the_client_receives(policy, facts, scopes, service_account, audience, fragment):
    with pytest.raises(OAuthError) as raised:
        policy.decide(facts, scopes, service_account, audience)
    assert raised.value.error == "access_denied" and fragment in raised.value.description
    assert "'" in raised.value.description  # names the rule


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("rules: [{name: a, certificate: {spiffe_id: x}, allowed: {}}]", ["line 1", "unknown key 'allowed'"]),
        ("rules:\n  - name: a\n    certificate: {}\n", ["line 3", "at least one"]),
        ("rules:\n  - name: a\n  - name: b\n    certificate: {sha256: x}\n", ["line 2", "exactly one"]),
        ("rules:\n  - {name: a, assertion: {issuer: nowhere, subject: x}}\n", ["not the name of an entry"]),
        ("rules:\n  - {name: a, client_secret: {client_id: c, secret_hashes: [plain]}}\n", ["hash-secret"]),
        # Malformed, or another cost: either would make this client's attempts take another time.
        ("rules:\n  - {name: a, client_secret: {client_id: c, secret_hashes: [scrypt$garbage]}}\n", ["hash-secret"]),
        ("rules:\n  - {name: a, client_secret: {client_id: c, secret_hashes: ['scrypt$1048576$8$1$"
         "AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=']}}\n", ["hash-secret"]),
        ("rules:\n  - {name: a, certificate: {sha256: x}}\n  - {name: a, certificate: {sha256: y}}\n",
         ["duplicate rule name"]),
        ("rules:\n  - {name: a, certificate: {sha256: x}, allow: {claims: {sub: evil}}}\n", ["reserved claim 'sub'"]),
        ("issuers:\n  - {name: k, issuer: 'http://cluster.example'}\nrules: []\n", ["https"]),
        ("rules: []\n", ["no rules"]),
        ("rules: [\n", ["not valid YAML"]),
        ("- just a list\n", ["must be a mapping"]),
    ],
)
def test_invalid_policy_files_are_refused_with_line_and_reason(tmp_path, text, fragments):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as raised:
        load_policy(str(path))
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, message


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigurationError) as raised:
        parse_policy({"rules": [{"name": "A b"}, {"name": "c", "certificate": {"sha256": "x"}, "allow": {"x": 1}}]})
    assert len(raised.value.problems) >= 3


def run_cli(*arguments: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "token_admin", *arguments], capture_output=True, text=True,
                          input=stdin, timeout=60)


def test_simulate_with_a_certificate(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    issued = mint_client(tmp_path, "meter", spiffe=FLEET, dns=["meter-42.fleet.example"])
    result = run_cli("simulate", "--policy", str(tmp_path / "policy.yaml"), "--cert", str(issued.certificate),
                     "--scope", SCOPE, "--service-account", "meters@p.iam.gserviceaccount.com")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["decision"] == "allow" and decision["rule"] == "meters"
    assert decision["token_lifetime_seconds"] == 120
    assert decision["claims"]["fleet"] == "meters" and decision["claims"]["client"]["x5_spiffe"] == FLEET
    # The claims the service would sign, computed by the same code: its subject, lifetime cap and binding.
    claims = decision["claims"]
    assert claims["sub"] == claims["client_id"] == decision["client_id"]
    assert claims["amr"] == ["xlb-mtls-client-credentials"]
    assert claims["exp"] - claims["iat"] == 120 and claims["cnf"]["x5t#S256"]
    denied = run_cli("simulate", "--policy", str(tmp_path / "policy.yaml"), "--cert", str(issued.certificate),
                     "--service-account", "admin@p.iam.gserviceaccount.com", "--scope", SCOPE)
    assert json.loads(denied.stdout)["decision"] == "deny"


def test_simulate_refuses_a_dns_san_with_a_comma_as_the_live_flow_does(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    issued = mint_client(tmp_path, "comma", spiffe=FLEET, dns=["a.example,admin.example"])
    result = run_cli("simulate", "--policy", str(tmp_path / "policy.yaml"), "--cert", str(issued.certificate))
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["decision"] == "deny" and decision["error"] == "invalid_client"
    assert "DNS SAN containing a comma" in decision["description"]


def test_simulate_with_an_assertion_and_a_secret_client(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    import jwt

    token = jwt.encode({"iss": "https://container.googleapis.com/v1/projects/p/locations/l/clusters/prod",
                        "sub": "system:serviceaccount:payments:api", "aud": "x",
                        "kubernetes.io": {"namespace": "payments"}}, "k" * 32, algorithm="HS256")
    (tmp_path / "token").write_text(token)
    result = run_cli("simulate", "--policy", str(tmp_path / "policy.yaml"), "--assertion", f"@{tmp_path / 'token'}")
    decision = json.loads(result.stdout)
    assert decision["decision"] == "allow" and decision["rule"] == "payments"
    assert decision["client_id"] == "jwt:prod-cluster:system:serviceaccount:payments:api"
    result = run_cli("simulate", "--policy", str(tmp_path / "policy.yaml"), "--client-id", "legacy-scanner")
    assert json.loads(result.stdout)["rule"] == "scanner"


def test_hash_secret_and_check_policy(tmp_path):
    result = run_cli("hash-secret", stdin="a-long-enough-client-secret\n")
    assert result.returncode == 0 and result.stdout.startswith("scrypt$")
    assert run_cli("hash-secret", stdin="short\n").returncode == 2
    (tmp_path / "bad.yaml").write_text("rules: []\n")
    bad = run_cli("check-policy", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and "no rules" in bad.stderr


@pytest.mark.parametrize(
    ("matcher", "line"),
    [
        ("assertion: {issuer: k, subject: '*'}", 4),
        ("assertion: {issuer: k, subject: '**'}", 4),
        ("assertion: {issuer: k, subject: '*:*'}", 4),
        ("assertion: {issuer: k, subject: ['system:serviceaccount:payments:*', '*']}", 4),
        ("assertion: {issuer: k, claims: {kubernetes.io/namespace: '*'}}", 4),
        ("certificate: {spiffe_id: 'spiffe://*/**'}", 4),
        ("certificate: {uri_san: 'urn:*'}", 4),
        ("certificate: {dns_san: '*.*'}", 4),
        ("certificate: {sha256: x}\n    allow: {audiences: ['https://*.*']}", 5),
        ("certificate: {sha256: x}\n    allow: {service_accounts: ['*@*']}", 5),
    ],
)
def test_a_pattern_that_admits_every_identity_is_refused_as_a_blanket_grant(tmp_path, matcher, line):
    path = tmp_path / "policy.yaml"
    path.write_text(f"issuers: [{{name: k, issuer: 'https://k.example'}}]\nrules:\n  - name: a\n    {matcher}\n")
    with pytest.raises(ConfigurationError) as raised:
        load_policy(str(path))
    assert f"line {line}" in str(raised.value) and "blanket" in str(raised.value), str(raised.value)


def glob_policy(**certificate) -> object:
    return parse_policy({
        "issuers": [{"name": "k", "issuer": "https://k.example"}],
        "rules": [{"name": "payments", "assertion": {"issuer": "k", "subject": "system:serviceaccount:payments:*"},
                   "allow": {"audiences": ["https://ledger-*.a.run.app"],
                             "service_accounts": ["*@payments.iam.gserviceaccount.com"]}},
                  {"name": "devices", "certificate": certificate or {"uri_san": "https://ledger-*.a.run.app"}}],
    })


def payments(subject: str = "system:serviceaccount:payments:api") -> ClientFacts:
    return ClientFacts(flow="jwt-bearer", issuer_name="k", subject=subject)


@pytest.mark.parametrize("audience", ["https://ledger-x.evil.example/.a.run.app", "https://ledger-x@evil.example/.a.run.app",
                                      "https://ledger-x:443@evil.example/.a.run.app", "https://ledger-x .a.run.app"])
def test_a_star_in_a_url_pattern_stays_within_one_host_label(audience):
    policy = glob_policy()
    with pytest.raises(OAuthError):
        policy.decide(payments(), (), None, audience)
    with pytest.raises(OAuthError):
        policy.decide(cert(uri_sans=(audience,)), (), None, None)
    assert policy.decide(payments(), (), None, "https://ledger-abc.a.run.app").rule == "payments"
    assert policy.decide(cert(uri_sans=("https://ledger-abc.a.run.app",)), (), None, None).rule == "devices"


def test_a_star_in_a_subject_stays_within_one_colon_separated_field():
    policy = glob_policy()
    with pytest.raises(OAuthError):
        policy.decide(payments("system:serviceaccount:payments:x:system:serviceaccount:admin"), (), None, None)
    assert policy.decide(payments("system:serviceaccount:payments:api-2"), (), None, None).rule == "payments"


def test_a_star_in_an_e_mail_pattern_stays_within_the_local_part():
    policy = glob_policy()
    assert policy.decide(payments(), (), "api@payments.iam.gserviceaccount.com", None).rule == "payments"
    for account in ("x@evil.example@payments.iam.gserviceaccount.com",
                    "x@evil.example/@payments.iam.gserviceaccount.com", "api.x@payments.iam.gserviceaccount.com"):
        with pytest.raises(OAuthError):
            policy.decide(payments(), (), account, None)


def test_a_final_double_star_matches_further_path_segments_and_nothing_else():
    policy = glob_policy(spiffe_id="spiffe://fleet.example/ns/meters/**")
    assert policy.decide(cert(spiffe_id=FLEET), (), None, None).rule == "devices"
    for spiffe_id in ("spiffe://fleet.example/ns/meters", "spiffe://fleet.example/ns/metersx/sa/a",
                      "spiffe://fleet.example/ns/meters/sa/a@evil", "spiffe://fleet.example/ns/meters/sa:x"):
        with pytest.raises(OAuthError):
            policy.decide(cert(spiffe_id=spiffe_id), (), None, None)
    # A single star covers one segment only.
    with pytest.raises(OAuthError):
        glob_policy(spiffe_id="spiffe://fleet.example/ns/meters/*").decide(cert(spiffe_id=FLEET), (), None, None)


@pytest.mark.parametrize("pattern", ["https://**.a.run.app", "spiffe://fleet.example/**/sa/x", "spiffe://x/a**"])
def test_a_double_star_anywhere_but_a_final_path_segment_is_refused(pattern):
    with pytest.raises(ConfigurationError) as raised:
        glob_policy(uri_san=pattern)
    assert "**" in str(raised.value)


def test_a_star_in_a_dns_san_pattern_covers_one_label():
    policy = glob_policy(dns_san="*.fleet.example")
    assert policy.decide(cert(dns_sans=("meter-42.fleet.example",)), (), None, None).rule == "devices"
    for san in ("a.b.fleet.example", "fleet.example"):
        with pytest.raises(OAuthError):
            policy.decide(cert(dns_sans=(san,)), (), None, None)


def test_the_documented_policy_examples_load():
    import pathlib

    import yaml

    page = (pathlib.Path(__file__).parent.parent / "docs" / "policy.md").read_text()
    section = page.split("\n## Policy reference")[1].split("\n## ")[0]
    examples = section.split("```yaml\n")[2:]
    assert len(examples) == 3
    for example in examples:
        parse_policy(yaml.safe_load(example.split("```")[0]))
