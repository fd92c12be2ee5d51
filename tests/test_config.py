import pytest

from token_service.config import load_settings
from token_service.errors import ConfigurationError


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env)
    return raised.value.problems


def test_valid_configuration(environ):
    settings = load_settings(environ)
    assert settings.issuer == "https://token.example.net"
    assert settings.provider.sts_audience == (
        "//iam.googleapis.com/projects/123456789012/locations/global/"
        "workloadIdentityPools/device-pool/providers/token-service"
    )
    assert settings.provider.token_audience == "https:" + settings.provider.sts_audience
    assert settings.token_validity_seconds == 300
    assert settings.auth_flows == {"xlb-mtls-client-credentials"}
    # As the predecessor documented: by default the client id is the certificate's SHA-256 thumbprint.
    assert settings.mtls_headers.client_id == "X-Client-Cert-Hash"
    assert settings.mtls_headers.present == "X-Client-Cert-Present"


def test_empty_environment_reports_every_problem_at_once():
    reported = "\n".join(problems({}))
    for variable in (
        "TOKEN_ISSUER", "WORKLOAD_IDENTITY_PROJECT_NUMBER", "WORKLOAD_IDENTITY_POOL_ID",
        "WORKLOAD_IDENTITY_PROVIDER_ID",
    ):
        assert variable in reported


def test_predecessor_misspelled_names_are_aliases(environ):
    for suffix in ("PROJECT_NUMBER", "POOL_ID", "PROVIDER_ID"):
        environ[f"WORKLOAD_IDENITY_{suffix}"] = environ.pop(f"WORKLOAD_IDENTITY_{suffix}")
    assert load_settings(environ).provider.pool_id == "device-pool"


def test_alias_disagreeing_with_correct_name_is_refused(environ):
    environ["WORKLOAD_IDENITY_POOL_ID"] = "other-pool"
    assert any("disagree" in problem for problem in problems(environ))


@pytest.mark.parametrize(
    "issuer",
    ["http://token.example.net", "token.example.net", "https://", "https://token.example.net/path",
     "https://token.example.net?x=1", "https://user@token.example.net"],
)
def test_issuer_must_be_an_https_origin(environ, issuer):
    environ["TOKEN_ISSUER"] = issuer
    assert any("TOKEN_ISSUER" in problem for problem in problems(environ))


def test_issuer_trailing_slash_is_dropped_once(environ):
    environ["TOKEN_ISSUER"] = "https://token.example.net/"
    assert load_settings(environ).issuer == "https://token.example.net"


@pytest.mark.parametrize("number", ["my-project", "0123", "12a", "-5"])
def test_project_number_must_be_numeric(environ, number):
    environ["WORKLOAD_IDENTITY_PROJECT_NUMBER"] = number
    assert any("project number" in problem for problem in problems(environ))


@pytest.mark.parametrize("pool", ["abc", "Has-Upper", "gcp-reserved", "a" * 33, "under_score"])
def test_pool_id_format(environ, pool):
    environ["WORKLOAD_IDENTITY_POOL_ID"] = pool
    assert any("WORKLOAD_IDENTITY_POOL_ID" in problem for problem in problems(environ))


@pytest.mark.parametrize("validity", ["0", "-1", "five", "721", "1.5"])
def test_token_validity_range(environ, validity):
    environ["TOKEN_VALIDITY"] = validity
    assert any("TOKEN_VALIDITY" in problem for problem in problems(environ))


def test_auth_flows_list_is_trimmed_and_unknown_names_refused(environ):
    environ["AUTH_FLOWS"] = " xlb-mtls-client-credentials,, "
    assert load_settings(environ).auth_flows == {"xlb-mtls-client-credentials"}
    environ["AUTH_FLOWS"] = "xlb-mtls-client-credentials,magic-flow"
    assert any("magic-flow" in problem for problem in problems(environ))


def test_client_id_header_must_identify_the_certificate(environ):
    environ["MTLS_HEADER_CLIENT_ID"] = "X-Client-Cert-Serial-Number"
    assert any("MTLS_HEADER_CLIENT_ID" in problem for problem in problems(environ))


def test_client_id_header_matches_case_insensitively(environ):
    environ["MTLS_HEADER_CLIENT_ID"] = "x-client-cert-spiffe"
    assert load_settings(environ).mtls_headers.client_id == "X-Client-Cert-SPIFFE"


def test_custom_header_names(environ):
    environ["MTLS_HEADER_CLIENT_CERT_PRESENT"] = "X-Mtls-Present"
    environ["MTLS_HEADER_CLIENT_ID"] = "X-Client-Cert-DNSName-SANs"
    settings = load_settings(environ)
    assert settings.mtls_headers.present == "X-Mtls-Present"
    assert settings.mtls_headers.client_id == "X-Client-Cert-DNSName-SANs"


@pytest.mark.parametrize("name", ["X Bad", "X-Goog-Thing", "X-Client-Cert-Error"])
def test_header_names_are_valid_distinct_and_unreserved(environ, name):
    environ["MTLS_HEADER_CLIENT_CERT_PRESENT"] = name
    assert problems(environ)


def test_local_signer_needs_a_key_file(environ):
    del environ["SIGNING_KEY_FILE"]
    assert any("SIGNING_KEY_FILE" in problem for problem in problems(environ))


def test_unknown_signer_and_algorithm(environ):
    environ["TOKEN_SIGNER"] = "hsm"
    environ["SIGNING_ALGORITHM"] = "HS256"
    reported = "\n".join(problems(environ))
    assert "TOKEN_SIGNER" in reported and "SIGNING_ALGORITHM" in reported


def test_iam_signer_is_the_default(environ):
    del environ["TOKEN_SIGNER"], environ["SIGNING_KEY_FILE"]
    settings = load_settings(environ)
    assert settings.signer.kind == "iam" and settings.signer.service_account is None
    assert settings.google.sts_endpoint == "https://sts.googleapis.com/v1/token"
    assert settings.google.service_account_jwks_uri("sa@p.iam.gserviceaccount.com") == (
        "https://www.googleapis.com/service_accounts/v1/metadata/jwk/sa@p.iam.gserviceaccount.com"
    )
    assert settings.google.service_account_token_lifetime == 3600


def test_iam_signer_refuses_a_key_file_instead_of_ignoring_it(environ):
    environ["TOKEN_SIGNER"] = "iam"
    assert any("SIGNING_KEY_FILE" in problem for problem in problems(environ))


def test_signing_service_account_must_be_an_email(environ):
    environ.update(TOKEN_SIGNER="iam", SIGNING_SERVICE_ACCOUNT="token-service")
    del environ["SIGNING_KEY_FILE"]
    assert any("SIGNING_SERVICE_ACCOUNT" in problem for problem in problems(environ))


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [("https://sts.p.googleapis.com/v1/token", True), ("http://127.0.0.1:9000/v1/token", True),
     ("http://sts.example.com/v1/token", False), ("ftp://x", False), ("https://", False)],
)
def test_google_endpoints_are_https_except_on_loopback(environ, endpoint, ok):
    environ["STS_ENDPOINT"] = endpoint
    if ok:
        assert load_settings(environ).google.sts_endpoint == endpoint
    else:
        assert any("STS_ENDPOINT" in problem for problem in problems(environ))


@pytest.mark.parametrize("lifetime", ["59", "3601", "1h"])
def test_service_account_token_lifetime_is_capped_at_one_hour(environ, lifetime):
    environ["SERVICE_ACCOUNT_TOKEN_LIFETIME"] = lifetime
    assert any("SERVICE_ACCOUNT_TOKEN_LIFETIME" in problem for problem in problems(environ))


@pytest.mark.parametrize("limit", ["0", "-3", "ten", "10001", "2.5"])
def test_waiting_request_limit_is_a_whole_number_in_range(environ, limit):
    environ["MAX_WAITING_REQUESTS"] = limit
    assert any("MAX_WAITING_REQUESTS" in problem for problem in problems(environ))


def test_waiting_request_limit_defaults_to_the_threads(environ):
    environ["THREADS"] = "96"
    assert load_settings(environ).max_waiting_requests == 96
    environ["MAX_WAITING_REQUESTS"] = "400"
    assert load_settings(environ).max_waiting_requests == 400


NEW_SECRET = "n" * 24 + "0123456789abcdef-_NEWSECRET"
OLD_SECRET = "0f" * 32  # deploy.sh's shape: 64 hex digits


def test_no_proxy_secret_locally_means_no_check(environ):
    proxy = load_settings(environ).proxy_secret
    assert proxy.values == () and proxy.header == "X-Token-Service-Proxy-Secret"


def test_one_proxy_secret(environ):
    environ["PROXY_SECRETS"] = f"  {OLD_SECRET}\n"
    assert load_settings(environ).proxy_secret.values == (OLD_SECRET,)


@pytest.mark.parametrize("separated", [
    f"{NEW_SECRET}\n{OLD_SECRET}", f"{NEW_SECRET}\r\n{OLD_SECRET}\n", f"{NEW_SECRET},{OLD_SECRET}",
    f" {NEW_SECRET} ,\n\n , {OLD_SECRET} ,",
])
def test_two_proxy_secrets_during_a_rotation(environ, separated):
    environ["PROXY_SECRETS"] = separated
    assert load_settings(environ).proxy_secret.values == (NEW_SECRET, OLD_SECRET)


def test_more_than_two_proxy_secrets_are_refused(environ):
    environ["PROXY_SECRETS"] = f"{NEW_SECRET}\n{OLD_SECRET}\n{'a' * 40}"
    [problem] = problems(environ)
    assert "PROXY_SECRETS holds 3 values" in problem
    assert NEW_SECRET not in problem and OLD_SECRET not in problem


@pytest.mark.parametrize("bad", ["a" * 31, "a" * 31 + "!", "a" * 20 + " " + "b" * 20, "é" * 40, "a" * 32 + "="])
def test_short_or_invalid_proxy_secret_is_refused_without_echoing_it(environ, bad):
    environ["PROXY_SECRETS"] = f"{OLD_SECRET}\n{bad}"
    with pytest.raises(ConfigurationError) as raised:
        load_settings(environ)
    [problem] = raised.value.problems
    assert "PROXY_SECRETS: value 2 of 2 is not a valid secret" in problem
    for text in (str(raised.value), repr(raised.value)):
        assert bad not in text and bad[:16] not in text and OLD_SECRET not in text


def test_proxy_secrets_holding_only_separators_are_refused(environ):
    environ["PROXY_SECRETS"] = " ,\n, "
    assert any("holds no value" in problem for problem in problems(environ))


def test_on_google_an_unset_proxy_secret_stops_the_start(environ):
    environ["K_SERVICE"] = "token-service"
    [problem] = problems(environ)
    assert problem.startswith("set PROXY_SECRETS: ") and "deploy.sh does this" in problem
    environ["PROXY_SECRETS"] = OLD_SECRET
    assert load_settings(environ).proxy_secret.values == (OLD_SECRET,)


def test_proxy_secret_header_name(environ):
    environ.update(PROXY_SECRET_HEADER="X-Edge-Secret", PROXY_SECRETS=OLD_SECRET)
    assert load_settings(environ).proxy_secret.header == "X-Edge-Secret"


@pytest.mark.parametrize("name", ["X Bad", "X-Goog-Secret", "x-client-cert-hash"])
def test_proxy_secret_header_is_valid_unreserved_and_not_an_mtls_header(environ, name):
    environ["PROXY_SECRET_HEADER"] = name
    assert any("PROXY_SECRET_HEADER" in problem for problem in problems(environ))


def test_settings_never_print_the_proxy_secrets(environ):
    environ["PROXY_SECRETS"] = f"{NEW_SECRET}\n{OLD_SECRET}"
    printed = repr(load_settings(environ))
    assert "X-Token-Service-Proxy-Secret" in printed and "2 hidden" in printed
    assert NEW_SECRET not in printed and OLD_SECRET not in printed


REDIS_PASSWORD = "memorystore-auth-string-0123"


def with_redis(environ: dict[str, str], url: str, **more: str) -> dict[str, str]:
    return {**environ, "AUTH_FLOWS": "jwt-bearer", "POLICY_FILE": "/p.yaml", "REDIS_URL": url, **more}


def test_no_redis_url_keeps_state_in_memory(environ):
    assert load_settings(environ).redis is None


@pytest.mark.parametrize("url", ["redis://10.0.0.3", "redis://10.0.0.3:6379/0", f"redis://:{REDIS_PASSWORD}@host:6379",
                                 "rediss://default:pw@redis.internal:6378/3", "redis://[::1]:6379/"])
def test_redis_url_accepted(environ, url):
    settings = load_settings(with_redis(environ, url))
    assert settings.redis.url == url and settings.redis.key_prefix == "ts:"


@pytest.mark.parametrize("url", [
    "http://10.0.0.3:6379", "unix:///run/redis.sock", "redis://", f"redis://:{REDIS_PASSWORD}@:6379",
    f"redis://:{REDIS_PASSWORD}@host:port", "redis://host:0", "redis://host/db", "redis://host/0/1",
    "redis://host?socket_timeout=30", "redis://host#x", f"redis://:{REDIS_PASSWORD}@[::1/0",
    "redis://host?ssl_ca_certs=/etc/hosts", "rediss://host?ssl_ca_certs=/nonexistent.pem",
])
def test_malformed_redis_url_stops_the_start_without_showing_its_password(environ, url):
    found = problems(with_redis(environ, url))
    assert len(found) == 1 and found[0].startswith("REDIS_URL=")
    assert REDIS_PASSWORD not in found[0]


def test_rediss_url_may_name_the_memorystore_ca(environ, tmp_path):
    ca = tmp_path / "server-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings(with_redis(environ, f"rediss://10.0.0.3:6378?ssl_ca_certs={ca}"))
    assert settings.redis.ssl_ca_certs == str(ca)


def test_redis_key_prefix(environ):
    assert load_settings(with_redis(environ, "redis://h", REDIS_KEY_PREFIX="prod:")).redis.key_prefix == "prod:"
    for bad in ("has space", "x" * 65, "é"):
        assert any("REDIS_KEY_PREFIX" in problem for problem in problems(
            with_redis(environ, "redis://h", REDIS_KEY_PREFIX=bad)))


def test_redis_key_prefix_without_redis_url_is_refused(environ):
    assert any("REDIS_KEY_PREFIX" in problem for problem in problems({**environ, "REDIS_KEY_PREFIX": "p:"}))


def test_redis_url_without_a_flow_that_keeps_state_is_refused(environ):
    found = problems({**environ, "REDIS_URL": "redis://h"})
    assert found == ["REDIS_URL is set but no flow keeps state in it: AUTH_FLOWS enables neither jwt-bearer "
                     "nor client-secret; remove REDIS_URL"]


def test_settings_never_print_the_redis_password(environ):
    printed = repr(load_settings(with_redis(environ, f"redis://:{REDIS_PASSWORD}@10.0.0.3:6379")))
    assert "redis://:***@10.0.0.3:6379" in printed and REDIS_PASSWORD not in printed


def test_the_google_token_cache_is_on_by_default_with_a_margin_and_a_bound(environ):
    assert tuple(load_settings(environ).token_cache) == (True, 300, 10_000)
    environ.update(GOOGLE_TOKEN_CACHE="off", GOOGLE_TOKEN_CACHE_MARGIN_SECONDS="60",
                   GOOGLE_TOKEN_CACHE_MAX_ENTRIES="5")
    assert tuple(load_settings(environ).token_cache) == (False, 60, 5)


def test_the_default_margin_fits_a_short_service_account_token_lifetime(environ):
    environ["SERVICE_ACCOUNT_TOKEN_LIFETIME"] = "120"
    assert load_settings(environ).token_cache.margin_seconds == 60


@pytest.mark.parametrize(("name", "value"), [
    ("GOOGLE_TOKEN_CACHE", "yes"),
    ("GOOGLE_TOKEN_CACHE_MARGIN_SECONDS", "-1"),
    ("GOOGLE_TOKEN_CACHE_MARGIN_SECONDS", "5m"),
    ("GOOGLE_TOKEN_CACHE_MARGIN_SECONDS", "3600"),  # as long as the tokens live: never a hit
    ("GOOGLE_TOKEN_CACHE_MAX_ENTRIES", "0"),
    ("GOOGLE_TOKEN_CACHE_MAX_ENTRIES", "1e4"),
])
def test_bad_google_token_cache_settings_stop_the_cold_start(environ, name, value):
    environ[name] = value
    assert any(problem.startswith(f"{name}=") for problem in problems(environ))


def test_the_margin_must_be_shorter_than_the_service_account_token_lifetime(environ):
    environ.update(SERVICE_ACCOUNT_TOKEN_LIFETIME="600", GOOGLE_TOKEN_CACHE_MARGIN_SECONDS="600")
    assert any("fewer than SERVICE_ACCOUNT_TOKEN_LIFETIME (600)" in problem for problem in problems(environ))
