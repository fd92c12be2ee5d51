import io
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import default_names
from token_service.audit import (
    LABEL_VALUE_LIMIT,
    AttemptFacts,
    AuditRecord,
    CloudLoggingWriter,
    JsonLineWriter,
    fitted,
    token_attempt,
)
from token_service.edge.parsing import parse_trace
from token_service.errors import Reason, invalid_client
from token_service.request import CertificateHeaders, HttpRequestInfo, Trace


def test_w3c_traceparent():
    trace = parse_trace({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert trace == Trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True)


def test_cloud_trace_context_span_is_converted_to_hex():
    trace = parse_trace({"x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1"})
    assert trace == Trace("105445aa7843bc8bf206b12000100000", "0000000000000001", True)


def test_cloud_trace_context_span_beyond_64_bits_is_dropped_not_widened():
    """A spanId is 16 hex digits: 2^64 and above has none, so the trace is kept without a span."""
    trace_id = "105445aa7843bc8bf206b12000100000"
    largest = parse_trace({"x-cloud-trace-context": f"{trace_id}/{2**64 - 1};o=1"})
    assert largest == Trace(trace_id, "ffffffffffffffff", True)
    for span in (2**64, 99999999999999999999):
        assert parse_trace({"x-cloud-trace-context": f"{trace_id}/{span};o=1"}) == Trace(trace_id, None, True)


@pytest.mark.parametrize("value", ["", "nonsense", "00-xyz-abc-01", "zz/1;o=1"])
def test_malformed_trace_headers_are_ignored(value):
    assert parse_trace({"traceparent": value, "x-cloud-trace-context": value}) is None


def test_header_labels_hold_every_configured_header_present_and_bound_long_values():
    headers = {"x-client-cert-present": "1", "x-client-cert-hash": "", "x-client-cert-spiffe": "v" * 5000,
               "authorization": "Bearer secret"}
    names = default_names()
    record = token_attempt(AttemptFacts(), header_labels=CertificateHeaders.read(headers, names).labels(names),
                           error=None, trace=None, http_request=None, latency_seconds=0)
    labels = {name: value for name, value in record.labels.items() if name.startswith("header/")}
    assert set(labels) == {"header/x-client-cert-present", "header/x-client-cert-hash", "header/x-client-cert-spiffe"}
    assert labels["header/x-client-cert-hash"] == ""
    assert len(labels["header/x-client-cert-spiffe"]) < LABEL_VALUE_LIMIT + 40


RECORD = AuditRecord(
    severity="WARNING",
    message="Refused token request: no certificate",
    labels={"event": "token", "reason": "no_client_certificate", "header/x-client-cert-present": "false"},
    trace=Trace("105445aa7843bc8bf206b12000100000", "0000000000000001", True),
    http_request=HttpRequestInfo("POST", "https://t.example/token", "curl/8", "203.0.113.9"),
    status=401,
    latency_seconds=0.0123,
)


def test_json_line_writer_emits_one_cloud_logging_line():
    stream = io.StringIO()
    JsonLineWriter(stream, project_id="my-proj").write(RECORD)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["severity"] == "WARNING"
    assert entry["message"] == RECORD.message
    assert entry["logging.googleapis.com/labels"] == RECORD.labels
    assert entry["logging.googleapis.com/trace"] == "projects/my-proj/traces/105445aa7843bc8bf206b12000100000"
    assert entry["logging.googleapis.com/spanId"] == "0000000000000001"
    assert entry["httpRequest"]["status"] == 401 and entry["httpRequest"]["remoteIp"] == "203.0.113.9"


def test_our_line_says_what_google_cloud_loggings_structured_handler_says():
    """The named library and our writer produce the same LogEntry fields."""
    ours, theirs = io.StringIO(), io.StringIO()
    JsonLineWriter(ours, project_id="my-proj").write(RECORD)
    library_writer = CloudLoggingWriter(theirs, project_id="my-proj")
    library_writer._logger.get()  # wait for the import, so this line comes from the library
    library_writer.write(RECORD)
    library_entries = [json.loads(line) for line in theirs.getvalue().splitlines()]
    library = next(entry for entry in library_entries if "message" in entry)
    mine = json.loads(ours.getvalue())
    for key in ("severity", "message", "logging.googleapis.com/trace", "logging.googleapis.com/spanId",
                "logging.googleapis.com/trace_sampled"):
        assert library[key] == mine[key], key
    library_labels = dict(library["logging.googleapis.com/labels"])
    library_labels.pop("python_logger")
    assert library_labels == mine["logging.googleapis.com/labels"]
    for key in ("requestMethod", "requestUrl", "userAgent", "remoteIp", "status"):
        assert library["httpRequest"][key] == mine["httpRequest"][key], key


def test_lines_written_while_the_library_loads_use_the_same_format():
    stream = io.StringIO()
    writer = CloudLoggingWriter(stream, project_id="my-proj")
    writer.write(RECORD)  # possibly before the import finished: never lost, never blocked
    [entry] = [json.loads(line) for line in stream.getvalue().splitlines() if '"message"' in line]
    assert entry["logging.googleapis.com/labels"]["reason"] == "no_client_certificate"


def test_a_line_of_hostile_length_still_fits_one_atomic_pipe_write():
    """Workers share one stdout pipe: a line over PIPE_BUF could interleave with another's."""
    headers = {f"x-client-cert-{index}": "v" * 5000 for index in range(11)}
    record = token_attempt(
        AttemptFacts(message="Refused token request: " + "m" * 3000, client_labels={"client_id": "c" * 127}),
        header_labels=headers,
        error=replace(invalid_client("The header is malformed", Reason.MALFORMED_CERTIFICATE_HEADER),
                      upstream_response="g" * 2000),
        trace=None,
        http_request=HttpRequestInfo("POST", "https://t.example/token?" + "q" * 9000, "u" * 3000, "203.0.113.9"),
        latency_seconds=0.01,
    )
    stream = io.StringIO()
    JsonLineWriter(stream).write(record)
    line = stream.getvalue()
    assert len(line.encode()) <= 4096
    entry = json.loads(line)
    labels = entry["logging.googleapis.com/labels"]
    assert labels["reason"] == "malformed_certificate_header" and labels["client_id"] == "c" * 127
    assert labels["header/x-client-cert-0"].endswith("...[5000 chars]")
    assert entry["upstream_response"].endswith("...[2000 chars]")


def test_an_ordinary_line_is_left_whole():
    assert fitted(RECORD) == RECORD


@pytest.mark.parametrize("character", ["\u00e9", "\x01", '"', "\\"])
def test_escaped_characters_count_as_the_bytes_they_take(character):
    """Non-ASCII and control characters take six bytes each as \\uXXXX, quotes and backslashes
    two: the budget is measured encoded."""
    headers = {f"x-client-cert-{index}": character * 5000 for index in range(11)}
    record = token_attempt(
        AttemptFacts(message="Refused token request", client_labels={"client_id": "c" * 127}),
        header_labels=headers,
        error=invalid_client("The header is malformed", Reason.MALFORMED_CERTIFICATE_HEADER),
        trace=None,
        http_request=HttpRequestInfo("POST", "https://t.example/token", character * 3000, "203.0.113.9"),
        latency_seconds=0.01,
    )
    stream = io.StringIO()
    JsonLineWriter(stream).write(record)
    assert len(stream.getvalue().encode()) <= 4096
    labels = json.loads(stream.getvalue())["logging.googleapis.com/labels"]
    assert labels["client_id"] == "c" * 127 and labels["reason"] == "malformed_certificate_header"
    assert labels["header/x-client-cert-0"].endswith("...[5000 chars]")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from('a"\\\x01\x7f\u00e9\u4e2d~'), max_size=3000), min_size=1, max_size=11))
def test_any_header_values_fit_one_atomic_pipe_write(values):
    """Quotes and backslashes take two bytes, control and non-ASCII characters six: whatever a
    hostile client puts in the headers, the encoded line stays within PIPE_BUF."""
    headers = {f"x-client-cert-{index}": value for index, value in enumerate(values)}
    record = token_attempt(
        AttemptFacts(message="Refused token request", client_labels={"client_id": "c" * 127}),
        header_labels=headers,
        error=invalid_client("The header is malformed", Reason.MALFORMED_CERTIFICATE_HEADER),
        trace=None,
        http_request=HttpRequestInfo("POST", "https://t.example/token", values[0], "203.0.113.9"),
        latency_seconds=0.01,
    )
    stream = io.StringIO()
    JsonLineWriter(stream).write(record)
    assert len(stream.getvalue().encode()) <= 4096
    assert json.loads(stream.getvalue())["logging.googleapis.com/labels"]["client_id"] == "c" * 127


def test_every_free_form_field_enlarged_at_once_still_fits_one_atomic_pipe_write():
    """URL, user agent, remote address, method, header values, client id, error text and Google's answer
    all at hostile length: the line is still one valid JSON line within PIPE_BUF, each value marked cut."""
    headers = {f"x-client-cert-{index}": "v" * 30000 for index in range(11)}
    record = token_attempt(
        AttemptFacts(message="Refused token request: " + "m" * 30000, client_labels={"client_id": "c" * 30000},
                     exchange={"principal": "p" * 30000}),
        header_labels=headers,
        error=replace(invalid_client("e" * 30000, Reason.MALFORMED_CERTIFICATE_HEADER),
                      audit_labels=(("signing_error", "s" * 30000),), upstream_response="g" * 30000),
        trace=Trace("105445aa7843bc8bf206b12000100000", "0000000000000001", True),
        http_request=HttpRequestInfo("M" * 30000, "https://" + "h" * 30000 + "/token", "u" * 30000, "6" * 30000),
        latency_seconds=0.01,
    )
    for writer_class in (JsonLineWriter, CloudLoggingWriter):
        stream = io.StringIO()
        writer = writer_class(stream, project_id="my-proj")
        if isinstance(writer, CloudLoggingWriter):
            writer._logger.get()  # the library's line, whose own fields take room too
        writer.write(record)
        [line] = [text for text in stream.getvalue().splitlines(keepends=True) if '"message"' in text]
        assert len(line.encode()) <= 4096, writer_class
        entry = json.loads(line)
        request = entry["httpRequest"]
        assert request["remoteIp"].endswith("...[30000 chars]") and request["requestMethod"].endswith("chars]")
        assert request["userAgent"].endswith("...[30000 chars]")
        assert entry["logging.googleapis.com/labels"]["client_id"].endswith("...[30000 chars]")
