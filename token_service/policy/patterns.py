"""The policy's glob patterns: what ``*``, ``?``, ``[..]`` and a final ``/**`` match.

One rule for every field (URI and DNS SANs, SPIFFE ids, subjects, audiences, claims, service
accounts): ``*`` matches any run of characters within one segment and ``?`` one such character, where
segments are separated by any of ``/ @ : .``, a comma or whitespace, which a wildcard never matches. So
``https://ledger-*.a.run.app`` stays within one host label, ``system:serviceaccount:payments:*`` within
the last field, ``*@p.iam.gserviceaccount.com`` within the local part. A pattern ending in ``/**``
matches one or more further path segments (which may hold ``.`` but never ``@ :``, a comma or
whitespace); ``**`` anywhere else is refused, as a wildcard that would cross a host or a field. A pattern
with no literal text but separators and a scheme (``*``, ``*:*``, ``spiffe://*/**``) is refused too: it
admits every identity of its kind, a blanket grant.
"""

from __future__ import annotations

import re
from functools import lru_cache

SEPARATORS = "/@:.,"
_SEGMENT_CHARACTER = r"[^/@:.,\s]"
_PATH_TAIL = r"(?:/[^/@:,\s]+)+"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?://)?")


def problem(pattern: str) -> str | None:
    """Why a pattern is refused at load time, or None."""
    body = pattern[:-3] if pattern.endswith("/**") else pattern
    # What is left of its literal text once wildcards and the scheme are gone; separators name nobody.
    literal = re.sub(r"\[!?\]?[^\]]*\]|[*?]", "", _SCHEME.sub("", body))
    if not literal.strip(SEPARATORS + " \t"):
        return f"pattern {pattern!r} admits every value of its kind: a blanket grant (name what it must contain)"
    if "**" in body:
        return f"pattern {pattern!r}: '**' is only allowed as a final '/**' (further path segments)"
    return None


def matches(patterns: tuple[str, ...], value: str) -> bool:
    return bool(value) and any(_compile(pattern).fullmatch(value) for pattern in patterns)


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    tail = pattern.endswith("/**")
    body = pattern[:-3] if tail else pattern
    parts: list[str] = []
    index = 0
    while index < len(body):
        character = body[index]
        index += 1
        if character == "*":
            parts.append(_SEGMENT_CHARACTER + "*")
        elif character == "?":
            parts.append(_SEGMENT_CHARACTER)
        elif character == "[" and (end := _class_end(body, index)) > 0:
            content = body[index:end]
            negated = content.startswith("!")
            content = (content[1:] if negated else content).replace("\\", "\\\\").replace("^", "\\^")
            # A class matches one character of a segment, like ?; never a separator, even negated.
            parts.append(rf"(?![/@:.,\s])[{'^' if negated else ''}{content}]")
            index = end + 1
        else:
            parts.append(re.escape(character))
    return re.compile("".join(parts) + (_PATH_TAIL if tail else ""))


def _class_end(pattern: str, start: int) -> int:
    """The index of the ``]`` closing a class opened before ``start`` (``[!]..]`` and ``[]..]`` hold a ``]``), or -1."""
    index = start + (1 if pattern[start:start + 1] == "!" else 0)
    index += 1 if pattern[index:index + 1] == "]" else 0
    return pattern.find("]", index)
