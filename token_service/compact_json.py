"""Compact JSON, the one encoding of every response body, claims set and audit line.

One encoder built once: ``json.dumps`` with options builds a new encoder per call,
a measurable share of an ID token's cost.
"""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"))  # ensure_ascii: the output is ASCII


def compact_json_text(document: Any) -> str:
    return _ENCODER.encode(document)


def compact_json(document: Any) -> bytes:
    return _ENCODER.encode(document).encode("ascii")
