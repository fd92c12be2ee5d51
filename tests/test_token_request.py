import pytest

from token_service.edge.parsing import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_PARAMETERS,
    check_headers,
    parse_token_request,
)
from token_service.errors import OAuthError, Reason

FORM = "application/x-www-form-urlencoded"


def test_form_is_parsed():
    request = parse_token_request(b"grant_type=client_credentials&format=external_credential", FORM)
    assert request.grant_type == "client_credentials"
    assert request.response_format == "external_credential"


def test_content_type_parameters_are_allowed():
    assert parse_token_request(b"grant_type=x", FORM + "; charset=UTF-8").grant_type == "x"


def test_missing_grant_type_is_left_to_the_caller():
    assert parse_token_request(b"", FORM).grant_type == ""


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"grant_type=x", "application/json", "application/x-www-form-urlencoded"),
        (b"grant_type=x", None, "no content type"),
        (b"grant_type=x&grant_type=y", FORM, "more than once"),
        (b"grant_type=\xff", FORM, "UTF-8"),
        (b"grant_type=%ff", FORM, "UTF-8"),
        (b"grant_type", FORM, "form encoding"),
        (b"grant_type=x&format=xml", FORM, "Unknown format"),
        (b"grant_type=a%0Ab", FORM, "control characters"),
    ],
)
def test_bad_requests(body, content_type, fragment):
    with pytest.raises(OAuthError) as raised:
        parse_token_request(body, content_type)
    assert (raised.value.status, raised.value.error) == (400, "invalid_request")
    assert fragment in raised.value.description


def test_too_many_parameters_say_so_and_name_the_limit():
    """33 parameters are a well-formed form with one parameter too many, not a broken encoding."""
    parse_token_request(b"&".join(b"p%d=1" % i for i in range(MAX_PARAMETERS)), FORM)
    with pytest.raises(OAuthError) as raised:
        parse_token_request(b"&".join(b"p%d=1" % i for i in range(MAX_PARAMETERS + 1)), FORM)
    assert (raised.value.status, raised.value.error) == (400, "invalid_request")
    assert raised.value.description == "The request body has 33 parameters; the limit is 32"


def test_oversized_body_is_413():
    with pytest.raises(OAuthError) as raised:
        parse_token_request(b"a=" + b"x" * MAX_BODY_BYTES, FORM)
    assert raised.value.status == 413 and raised.value.reason is Reason.BODY_TOO_LARGE


def test_header_sets_beyond_the_limits_are_431():
    check_headers({f"x-{index}": "v" for index in range(MAX_HEADERS)})
    check_headers({"x-client-cert-chain": "A" * (MAX_HEADER_BYTES - 100)})  # a long chain still fits
    for headers in ({f"x-{index}": "v" for index in range(MAX_HEADERS + 1)},
                    {"x-client-cert-chain": "A" * MAX_HEADER_BYTES}):
        with pytest.raises(OAuthError) as refused:
            check_headers(headers)
        assert refused.value.status == 431 and refused.value.reason is Reason.HEADERS_TOO_LARGE
