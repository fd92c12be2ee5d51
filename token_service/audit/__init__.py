"""One audit line per attempt: the record (``record``), its writers (``writers``) and the pipe that keeps
lines whole (``log_pipe``)."""

from token_service.audit.record import (
           LABEL_VALUE_LIMIT,
           AttemptFacts,
           AuditRecord,
           AuditWriter,
           bounded,
           fitted,
           token_attempt,
)
from token_service.audit.writers import CloudLoggingWriter, JsonLineWriter, audit_writer
from token_service.request import HttpRequestInfo, Trace

__all__ = ["LABEL_VALUE_LIMIT", "AttemptFacts", "AuditRecord", "AuditWriter", "CloudLoggingWriter",
           "HttpRequestInfo", "JsonLineWriter", "Trace", "audit_writer", "bounded", "fitted", "token_attempt"]
