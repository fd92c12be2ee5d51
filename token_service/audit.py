"""Audit logging: exactly one structured line per token request.

The line is JSON on stdout in the shape Cloud Logging parses into a LogEntry
(severity, message, labels, trace, httpRequest). Its labels hold every mTLS
header value the load balancer passed, so a failed attempt can be diagnosed
from the line alone. It never holds a token or a key: records are built from
named fields only.

Two writers produce the same entry: ``JsonLineWriter`` (no dependencies) and
``CloudLoggingWriter`` (google-cloud-logging's ``StructuredLogHandler``), whose
heavy import runs in the background (``BackgroundLoader``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import IO, Any, NamedTuple, Protocol

from token_service.background import BackgroundLoader
from token_service.compact_json import compact_json_text
from token_service.errors import OAuthError

LABEL_VALUE_LIMIT = 1024
# The names and values of one line may take this much; JSON syntax, escapes and the fixed fields
# (trace, severity, Cloud Logging's own) stay well inside the rest of PIPE_BUF's 4096 bytes.
LINE_TEXT_BUDGET = 2800
QUERIED_VALUE_LIMIT = 128
HEADER_LABEL_PREFIX = "header/"
_CUT_MARKER = re.compile(r"\.\.\.\[(\d+) chars\]$")
# What JSON escapes (ensure_ascii also escapes every non-ASCII character).
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')


class Trace(NamedTuple):
    trace_id: str
    span_id: str | None
    sampled: bool


class HttpRequestInfo(NamedTuple):
    method: str
    url: str
    user_agent: str
    remote_ip: str


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
    joined = "".join(texts)
    if joined.isascii() and not _JSON_ESCAPED.search(joined):
        # The common line has nothing to escape: its size is the characters, a pair of quotes and a
        # comma each, and the brackets, without paying for an encoding on every request.
        return len(joined) + 3 * len(texts) + 1
    return len(compact_json_text(texts))


def bounded(value: str, limit: int = LABEL_VALUE_LIMIT) -> str:
    if len(value) <= limit:
        return value
    # A value cut before keeps the length it had before the first cut.
    marker = _CUT_MARKER.search(value)
    return value[:limit] + f"...[{int(marker.group(1)) if marker else len(value)} chars]"


class JsonLineWriter:
    """Writes one Cloud Logging structured JSON line per record."""

    def __init__(self, stream: IO[str] | None = None, project_id: str | None = None):
        self._stream = stream
        self._project_id = project_id
        self._lock = threading.Lock()

    def write(self, record: AuditRecord) -> None:
        entry: dict[str, Any] = {
            "severity": record.severity,
            "message": record.message,
            **record.fields,
            "logging.googleapis.com/labels": record.labels,
        }
        if record.trace is not None:
            entry.update(_trace_fields(record.trace, self._project_id))
        if record.http_request is not None:
            entry["httpRequest"] = _http_request(record)
        line = compact_json_text(entry) + "\n"
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()


class CloudLoggingWriter:
    """Writes through google-cloud-logging's ``StructuredLogHandler``.

    The library takes about 0.35 s to import, more than a whole cold start, so it
    loads in the background from the first write on; until it is ready, the same
    entries are written by ``JsonLineWriter`` (a test checks both write the same fields).
    """

    def __init__(self, stream: IO[str] | None = None, project_id: str | None = None):
        self._stream = stream
        self._project_id = project_id
        # Started by the first write, not at the fork: the first token must not share
        # the CPU with this import.
        self._logger = BackgroundLoader("audit-log-import", self._load, start_after_fork=False)
        self._until_loaded = JsonLineWriter(stream, project_id)

    def _load(self) -> logging.Logger:
        from google.cloud.logging_v2.handlers import StructuredLogHandler

        # sys.__stdout__ is where the handler writes on Cloud Functions too:
        # it bypasses functions-framework's stdout redirection.
        handler = StructuredLogHandler(project_id=self._project_id, stream=self._stream or sys.__stdout__)
        # The library announces itself once; do it now, so no token attempt gets a second line.
        handler.emit_instrumentation_info()
        logger = logging.getLogger("token_service.audit")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.handlers = [handler]
        return logger

    def write(self, record: AuditRecord) -> None:
        self._logger.start()  # no-op once started (in a gunicorn worker: right after the fork)
        if not self._logger.ready():
            self._until_loaded.write(record)
            return
        extra: dict[str, Any] = {"labels": record.labels, "json_fields": record.fields}
        if record.trace is not None:
            # An explicit trace is written as given, so it must already be the full name.
            extra.update(trace=_trace_name(record.trace, self._project_id), span_id=record.trace.span_id)
            extra["trace_sampled"] = record.trace.sampled
        if record.http_request is not None:
            extra["http_request"] = _http_request(record)
        self._logger.get().log(logging.getLevelName(record.severity), record.message, extra=extra)


def audit_writer(handler: str, project_id: str | None, stream: IO[str] | None = None) -> AuditWriter:
    if handler == "cloud-logging":
        return CloudLoggingWriter(stream, project_id)
    return JsonLineWriter(stream, project_id)


def _trace_name(trace: Trace, project_id: str | None) -> str:
    return f"projects/{project_id}/traces/{trace.trace_id}" if project_id else trace.trace_id


def _trace_fields(trace: Trace, project_id: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"logging.googleapis.com/trace": _trace_name(trace, project_id)}
    if trace.span_id:
        fields["logging.googleapis.com/spanId"] = trace.span_id
    fields["logging.googleapis.com/trace_sampled"] = trace.sampled
    return fields


def _http_request(record: AuditRecord) -> dict[str, Any]:
    request = record.http_request
    assert request is not None
    return {
        "requestMethod": request.method,
        "requestUrl": request.url,
        "userAgent": bounded(request.user_agent),
        "remoteIp": request.remote_ip,
        "status": record.status,
        "latency": f"{record.latency_seconds:.6f}s",
    }
