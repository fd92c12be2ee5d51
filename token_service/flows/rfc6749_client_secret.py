"""The ``client-secret`` flow: RFC 6749 ``client_secret_basic`` and ``client_secret_post``.

For systems that can do neither mTLS nor signed assertions. The policy stores
only slow salted hashes (scrypt); two may be active per client, for rotation.
Comparison is constant-time, every client id (unknown, one hash or mid-rotation)
costs the same number of scrypt verifications, and failed attempts are
rate-limited per client id and source address (a token bucket that refills), so a
stranger's guesses never lock out the real client calling from elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from token_service.errors import OAuthError, Reason
from token_service.policy import MAX_SECRET_HASHES, Policy
from token_service.request import ClientCredentials
from token_service.state import FailureStore
from token_service.state.failure_limiter import FailureLimiter

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
CLAIMED_CLIENT_ID_LIMIT = 64  # the longest client id a policy accepts
_NOT_IN_A_CLIENT_ID = re.compile(r"[^A-Za-z0-9._~-]")


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def verify_secret(secret: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


class SecretAuthenticator:
    def __init__(self, policy: Policy, limiter: FailureStore | None = None):
        self._policy = policy
        self._limiter = limiter or FailureLimiter()
        # Hashes no secret matches, with the parameters hash-secret uses: they pad every client's
        # list to the same length, so each attempt costs MAX_SECRET_HASHES verifications.
        self._padding = tuple(hash_secret(secrets.token_urlsafe(16)) for _ in range(MAX_SECRET_HASHES))

    def authenticate(self, credentials: ClientCredentials, source: str = "") -> str:
        """The authenticated client id, or ``OAuthError``. ``source``: the caller's address.

        Failures count per (client id, source): keyed by client id alone, anyone could lock a
        client out by guessing its secret. The source is the address Google's load balancer saw
        (``client_address.client_ip``), which the caller cannot choose per request.
        """
        basic = credentials.method == "client_secret_basic"
        client_id = credentials.client_id
        claimed = claimed_client_id_label(client_id)
        labels = (("claimed_client_id", claimed),)
        if not client_id:
            raise invalid_client_secret("The client_id is required with a client secret", basic, labels)
        key = (client_id, source)
        wait = self._limiter.retry_after(key)
        if wait:
            raise OAuthError(429, "invalid_client", f"Too many failed attempts for client '{claimed}' "
                             f"from this address; retry after {wait} s", Reason.RATE_LIMITED,
                             headers=(("Retry-After", str(wait)),), audit_labels=labels)
        rule = self._policy.secret_rule(client_id)
        hashes = rule.client_secret.secret_hashes if rule and rule.client_secret else ()
        # Always the same number of verifications and no early exit: the time says neither whether
        # the client exists, nor whether it is mid-rotation, nor which hash matched.
        padded = (*hashes, *self._padding)[:MAX_SECRET_HASHES]
        matched = [verify_secret(credentials.secret, encoded) for encoded in padded][:len(hashes)]
        if not any(matched):
            self._limiter.failed(key)
            raise invalid_client_secret("The client id or secret is wrong", basic, labels)
        return client_id


def claimed_client_id_label(client_id: str) -> str:
    """The unverified client id of a refused attempt, for the audit line: whom someone is guessing
    for. Cut to the longest id a policy accepts (its length kept) and only a client id's
    characters (others become ``?``): the caller chose every byte of it."""
    cut = _NOT_IN_A_CLIENT_ID.sub("?", client_id[:CLAIMED_CLIENT_ID_LIMIT])
    return cut if len(client_id) <= CLAIMED_CLIENT_ID_LIMIT else f"{cut}...[{len(client_id)} chars]"


def invalid_client_secret(description: str, basic: bool = False,
                          labels: tuple[tuple[str, str], ...] = ()) -> OAuthError:
    # RFC 6749 5.2: a client that tried the Authorization header gets a challenge.
    headers = (("WWW-Authenticate", 'Basic realm="token-service"'),) if basic else ()
    return OAuthError(401, "invalid_client", description, Reason.INVALID_CLIENT_SECRET, headers=headers,
                      audit_labels=labels)
