"""The refusal reasons are a closed list: every refusal the code can raise names one of them."""

from __future__ import annotations

import ast
from pathlib import Path

from token_service.errors import OAuthError, Reason, invalid_client, invalid_request, server_error

PACKAGE = Path(__file__).resolve().parent.parent / "token_service"
# Constructor -> index of its reason argument, and whether it may be left to its default.
REFUSALS = {
    "OAuthError": (3, False),
    "invalid_client": (1, False),
    "invalid_grant": (1, False),
    "unsupported_grant_type": (1, False),
    "access_denied": (1, False),
    "invalid_request": (1, True),
    "server_error": (1, True),
    "temporarily_unavailable": (2, True),
}


def reason_argument(call: ast.Call, index: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "reason":
            return keyword.value
    return call.args[index] if len(call.args) > index else None


def test_every_refusal_in_the_code_names_a_listed_reason():
    members = set(Reason.__members__)
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name | ast.Attribute):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name not in REFUSALS or (path.name == "errors.py" and name == "OAuthError"):
                continue
            index, optional = REFUSALS[name]
            reason = reason_argument(node, index)
            where = f"{path.name}:{node.lineno} {name}(...)"
            if reason is None:
                assert optional, f"{where} names no reason"
                checked += 1
                continue
            if path.name == "errors.py" and isinstance(reason, ast.Name):
                continue  # the helpers pass their own parameter through
            choices = [reason.body, reason.orelse] if isinstance(reason, ast.IfExp) else [reason]
            for choice in choices:
                assert isinstance(choice, ast.Attribute) and isinstance(choice.value, ast.Name), where
                assert choice.value.id == "Reason" and choice.attr in members, where
            checked += 1
    assert checked > 40


def test_reason_values_are_stable_snake_case():
    for reason in Reason:
        assert reason.value == reason.name.lower()


def test_helpers_default_to_a_listed_reason():
    for error in (invalid_request("x"), server_error("x")):
        assert isinstance(error, OAuthError) and error.reason in Reason
    assert invalid_client("x", Reason.NO_CLIENT_CERTIFICATE).status == 401
