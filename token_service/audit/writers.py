"""Audit records as lines: Cloud Logging's structured JSON on standard output.

Two writers produce the same entry: ``CloudLoggingWriter`` (google-cloud-logging's
``StructuredLogHandler``, whose heavy import runs in the background) and ``JsonLineWriter``,
which replaces it where its cost shows: it writes while that import runs, and as the default
it spares the handler's 35-40 µs a line, about 5 % of a locally signed ID token
(docs/performance.md).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import IO, Any

from token_service.audit.record import AuditRecord, AuditWriter, bounded, json_line
from token_service.background import BackgroundLoader
from token_service.request import Trace


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
        line = json_line(entry) + "\n"
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
