"""``REDIS_URL`` and ``REDIS_KEY_PREFIX``: where the state shared across instances lives.

Checked at cold start without importing the Redis client (which only a deployment with
``REDIS_URL`` loads). The URL may hold Memorystore's AUTH string as its password: no message
ever shows it.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit, urlunsplit

from token_service.config.reader import EnvironmentReader

REDIS_SCHEMES = ("redis", "rediss")
DEFAULT_KEY_PREFIX = "ts:"
# Printable ASCII without spaces, short: it starts every key the broker writes.
_KEY_PREFIX = re.compile(r"^[!-~]{1,64}$")
# The only query parameter accepted: the CA of Memorystore's in-transit encryption. Others (timeouts,
# pool sizes) would override the broker's own, which keep a dead Redis from holding a thread.
_QUERY_PARAMETERS = ("ssl_ca_certs",)


class RedisSettings(NamedTuple):
    url: str
    key_prefix: str
    ssl_ca_certs: str | None

    def __repr__(self) -> str:  # the URL may hold the AUTH string
        return f"RedisSettings(url={redacted(self.url)!r}, key_prefix={self.key_prefix!r})"


def redis_from(reader: EnvironmentReader) -> RedisSettings | None:
    url = reader.get("REDIS_URL")
    prefix = reader.get("REDIS_KEY_PREFIX") or DEFAULT_KEY_PREFIX
    if url is None:
        if reader.get("REDIS_KEY_PREFIX"):
            reader.fail("REDIS_KEY_PREFIX is set but REDIS_URL is not; set both, or neither")
        return None
    if not _KEY_PREFIX.match(prefix):
        reader.fail(f"REDIS_KEY_PREFIX={prefix!r} must be 1-64 printable ASCII characters without spaces")
    problem, ca_file = _url_problem(url)
    if problem:
        reader.fail(f"REDIS_URL={redacted(url)!r} {problem}")
    return RedisSettings(url, prefix, ca_file)


def _url_problem(url: str) -> tuple[str | None, str | None]:
    """What is wrong with ``url`` (None if nothing), and its ``ssl_ca_certs``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL: redis[s]://[:password@]host[:port][/db]", None
    if parts.scheme not in REDIS_SCHEMES:
        return "must start with redis:// or rediss:// (TLS)", None
    if not parts.hostname:
        return "names no host", None
    if port == 0:
        return "names port 0", None
    if parts.path not in ("", "/") and not re.fullmatch(r"/[0-9]{1,2}", parts.path):
        return "must name a database by number (/0 to /99) or none", None
    if parts.fragment:
        return "must have no #fragment", None
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        return "has a malformed query", None
    unknown = sorted(set(query) - set(_QUERY_PARAMETERS))
    if unknown:
        return f"takes no query parameter but {', '.join(_QUERY_PARAMETERS)} (not {', '.join(unknown)})", None
    ca_file = query.get("ssl_ca_certs", [None])[-1]
    if ca_file is not None:
        if parts.scheme != "rediss":
            return "sets ssl_ca_certs, which only rediss:// (TLS) uses", None
        if not os.path.isfile(ca_file):
            return f"names ssl_ca_certs={ca_file!r}, which is not a readable file", None
    return None, ca_file


def redacted(url: str) -> str:
    """``url`` without its password (Memorystore's AUTH string), for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparsable URL>" if "@" in url else url
