"""The audit record: exactly one per token request, issued or refused.

It has the shape Cloud Logging parses into a LogEntry (severity, message,
labels, trace, httpRequest). Its labels hold every mTLS header value the load
balancer passed, so a failed attempt can be diagnosed from the line alone. It
never holds a token or a key: records are built from named fields only, and
each is cut to fit one atomic pipe write. ``writers`` turns records into lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from token_service.errors import OAuthError
from token_service.request import HttpRequestInfo, Trace

LABEL_VALUE_LIMIT = 1024
# The names and values of one line may take this much; JSON syntax, escapes and the fixed fields
# (trace, severity, Cloud Logging's own) stay well inside the rest of PIPE_BUF's 4096 bytes.
LINE_TEXT_BUDGET = 2800
QUERIED_VALUE_LIMIT = 128
HEADER_LABEL_PREFIX = "header/"
_CUT_MARKER = re.compile(r"\.\.\.\[(\d+) chars\]$")


class AuditRecord(NamedTuple):
    severity: str
    message: str
    labels: dict[str, str]
    trace: Trace | None = None
    http_request: HttpRequestInfo | None = None
    status: int = 200
    latency_seconds: float = 0.0
    fields: Mapping[str, Any] = MappingProxyType({})


class AuditWriter(Protocol):
    def write(self, record: AuditRecord) -> None: ...


def mtls_header_labels(headers: Mapping[str, str]) -> dict[str, str]:
    """``header/<name>`` labels for the mTLS headers (lower-cased name -> value) the request carried."""
    return {f"{HEADER_LABEL_PREFIX}{name}": bounded(value) for name, value in headers.items()}


class AttemptFacts(NamedTuple):
    """What one token attempt established, step by step: each step makes a new copy with its facts."""

    message: str = ""
    grant_type: str | None = None
    response_format: str | None = None
    flow: str | None = None
    client_labels: Mapping[str, str] = MappingProxyType({})  # the flow's: client id and what proved it
    policy_rule: str | None = None
    jti: str | None = None
    exchange: Mapping[str, str] = MappingProxyType({})  # which Google exchange, for whom
    upstream_seconds: float | None = None


def token_attempt(
    facts: AttemptFacts,
    *,
    header_labels: Mapping[str, str],
    error: OAuthError | None,
    trace: Trace | None,
    http_request: HttpRequestInfo | None,
    latency_seconds: float,
    event: str = "token",
) -> AuditRecord:
    """The audit record of one /token attempt, issued or refused (``event="request"``: a request to
    another path, refused before it reached its endpoint). ``header_labels``: the mTLS headers the
    request carried (lower-cased name -> value). Every label the line can have is named here."""
    if error is None:
        severity, status, outcome = "INFO", 200, {"outcome": "issued"}
    else:
        severity = "ERROR" if error.status >= 500 else "WARNING"
        status = error.status
        outcome = {"outcome": "refused", "reason": error.reason.value, "error": error.error}
    steps = {"grant_type": facts.grant_type, "format": facts.response_format, "flow": facts.flow}
    labels = {
        "event": event, **outcome, "status": str(status), **mtls_header_labels(header_labels),
        **{name: value for name, value in steps.items() if value is not None},
        **facts.client_labels,
        **({"policy_rule": facts.policy_rule} if facts.policy_rule is not None else {}),
        **({"jti": facts.jti} if facts.jti else {}),
        **facts.exchange,
        **dict(error.audit_labels if error is not None else ()),
    }
    fields: dict[str, Any] = {}
    if facts.upstream_seconds is not None:
        fields["upstream_seconds"] = facts.upstream_seconds
    if error is not None and error.upstream_response:
        fields["upstream_response"] = error.upstream_response
    return fitted(AuditRecord(
        severity=severity,
        message=facts.message,
        labels=labels,
        trace=trace,
        http_request=http_request,
        status=status,
        latency_seconds=latency_seconds,
        fields=fields,
    ))


def fitted(record: AuditRecord) -> AuditRecord:
    """The record, its long values cut further until its line fits in one atomic pipe write.

    The workers of an instance share one stdout pipe, and a write() of more than PIPE_BUF
    (4096) bytes may interleave with another worker's line, leaving neither parseable. The size
    is measured as encoded (a non-ASCII character takes six bytes as ``\\uXXXX``). Values of
    ``QUERIED_VALUE_LIMIT`` characters or fewer are cut only among the free-form ones (header
    values, Google's answer, the URL, the user agent, the remote address, the method), so
    reasons, client ids and the other queried labels stay whole.
    """
    for limit in (LABEL_VALUE_LIMIT, 512, 256, 128, 32, 8):
        if _encoded_size(record) <= LINE_TEXT_BUDGET:
            return record
        record = _cut(record, limit)
    return record


def _cut(record: AuditRecord, limit: int) -> AuditRecord:
    queried = max(limit, QUERIED_VALUE_LIMIT)
    request = record.http_request
    return record._replace(
        message=bounded(record.message, queried),
        labels={name: bounded(value, limit if name.startswith(HEADER_LABEL_PREFIX) else queried)
                for name, value in record.labels.items()},
        fields={name: bounded(value, limit) if isinstance(value, str) else value
                for name, value in record.fields.items()},
        http_request=request and request._replace(method=bounded(request.method, limit),
                                                  url=bounded(request.url, limit),
                                                  user_agent=bounded(request.user_agent, limit),
                                                  remote_ip=bounded(request.remote_ip, limit)),
    )


def _encoded_size(record: AuditRecord) -> int:
    texts = [record.message, *record.labels, *record.labels.values(),
             *(str(value) for value in record.fields.values())]
    if record.http_request is not None:
        texts += record.http_request
    return len(json_line(texts))


def json_line(document: Any) -> str:
    """The one encoding of an audit line: compact, ASCII (a character beyond it is escaped)."""
    return json.dumps(document, separators=(",", ":"))


def bounded(value: str, limit: int = LABEL_VALUE_LIMIT) -> str:
    if len(value) <= limit:
        return value
    # A value cut before keeps the length it had before the first cut.
    marker = _CUT_MARKER.search(value)
    return value[:limit] + f"...[{int(marker.group(1)) if marker else len(value)} chars]"
