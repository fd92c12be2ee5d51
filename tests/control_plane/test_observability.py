"""Log-based metrics through the real gcloud; alert policies through curl, as deploy.sh sends them."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.control_plane import gcloud_environment
from devtools.control_plane.server import ControlPlane, ControlPlaneServer
from tests.control_plane.conftest import requires_gcloud
from tests.control_plane.rest import call

METRICS = "logging/v2/projects/my-project/metrics"
POLICIES = "monitoring/v3/projects/my-project/alertPolicies"
REFUSALS = """name: token_service_refusals
description: refusals
filter: 'resource.type="cloud_run_revision" AND labels.outcome="refused"'
labelExtractors: {reason: EXTRACT(labels.reason)}
metricDescriptor: {metricKind: DELTA, valueType: INT64, unit: "1", labels: [{key: reason, valueType: STRING}]}
"""
LATENCY = """name: token_service_upstream_latency
filter: 'resource.type="cloud_run_revision" AND jsonPayload.upstream_seconds>0'
valueExtractor: EXTRACT(jsonPayload.upstream_seconds)
bucketOptions: {exponentialBuckets: {numFiniteBuckets: 32, growthFactor: 1.4, scale: 0.005}}
metricDescriptor: {metricKind: DELTA, valueType: DISTRIBUTION, unit: s}
"""
COUNTER = {"name": "tokens", "filter": 'labels.outcome="issued"'}
ALERT = {
    "displayName": "token-service refusal rate", "combiner": "OR",
    "conditions": [{"displayName": "refusals", "conditionThreshold": {
        "filter": 'metric.type="logging.googleapis.com/user/tokens" AND resource.type="cloud_run_revision"',
        "aggregations": [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_RATE",
                          "crossSeriesReducer": "REDUCE_SUM"}],
        "comparison": "COMPARISON_GT", "thresholdValue": 0.08, "duration": "300s"}}],
    "documentation": {"content": "see the README"},
}






@requires_gcloud
def test_log_metrics_through_gcloud(enabled: ControlPlane, gcloud: Callable[..., Any], tmp_path: Path) -> None:
    for name, text in (("refusals", REFUSALS), ("latency", LATENCY)):
        (tmp_path / f"{name}.yaml").write_text(text)
    created = gcloud("logging", "metrics", "create", "token_service_refusals",
                     f"--config-from-file={tmp_path / 'refusals.yaml'}")
    assert created.returncode == 0, created.stderr
    assert gcloud("logging", "metrics", "create", "token_service_upstream_latency",
                  f"--config-from-file={tmp_path / 'latency.yaml'}").returncode == 0
    metrics = enabled.apis["logging"].metrics
    assert metrics["token_service_upstream_latency"]["bucketOptions"]["exponentialBuckets"]["growthFactor"] == 1.4
    described = json.loads(gcloud("logging", "metrics", "describe", "token_service_refusals", "--format=json").stdout)
    assert described["metricDescriptor"]["type"] == "logging.googleapis.com/user/token_service_refusals"
    assert described["labelExtractors"] == {"reason": "EXTRACT(labels.reason)"}
    listed = gcloud("logging", "metrics", "list", "--format=value(name)")
    assert listed.stdout.split() == ["token_service_refusals", "token_service_upstream_latency"]

    (tmp_path / "more.yaml").write_text(
        "labelExtractors: {reason: EXTRACT(labels.reason), code: EXTRACT(labels.code)}\nmetricDescriptor: "
        "{metricKind: DELTA, valueType: INT64, labels: [{key: reason, valueType: STRING}, {key: code}]}\n")
    assert gcloud("logging", "metrics", "update", "token_service_refusals",
                  f"--config-from-file={tmp_path / 'more.yaml'}").returncode == 0  # a label may be added
    assert [label["key"] for label in metrics["token_service_refusals"]["metricDescriptor"]["labels"]] == \
        ["reason", "code"]
    (tmp_path / "kind.yaml").write_text(LATENCY.split("\n", 1)[1])
    refused = gcloud("logging", "metrics", "update", "token_service_refusals",
                     f"--config-from-file={tmp_path / 'kind.yaml'}")
    assert refused.returncode != 0 and "valueType cannot be changed" in refused.stderr
    assert metrics["token_service_refusals"]["metricDescriptor"]["valueType"] == "INT64"
    assert gcloud("logging", "metrics", "delete", "token_service_refusals").returncode == 0
    assert "token_service_refusals" not in metrics


def _without(path: str) -> dict[str, Any]:
    body = {"name": "m", "filter": "x", "labelExtractors": {"reason": "EXTRACT(labels.reason)"},
            "metricDescriptor": {"metricKind": "DELTA", "valueType": "INT64", "labels": [{"key": "reason"}]}}
    *parents, last = path.split(".")
    target = body
    for parent in parents:
        target = target[parent]
    del target[last]
    return body


@pytest.mark.parametrize("body, message", [
    (_without("filter"), "filter"),
    (_without("labelExtractors"), "no label extractor"),
    (_without("metricDescriptor.labels"), "not declared"),
    ({**COUNTER, "metricDescriptor": {"metricKind": "DELTAS"}}, "metric_kind"),
    ({**COUNTER, "metricDescriptor": {"metricKind": "GAUGE", "valueType": "INT64"}}, "must be DELTA"),
    ({**COUNTER, "metricDescriptor": {"valueType": "DISTRIBUTION"}}, "value_extractor"),
    ({**COUNTER, "metricDescriptor": {"valueType": "DISTRIBUTION"}, "valueExtractor": "EXTRACT(jsonPayload.x)"},
     "bucket_options"),
    ({**COUNTER, "metricDescriptor": {"valueType": "DISTRIBUTION"}, "valueExtractor": "EXTRACT(jsonPayload.x)",
      "bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 32, "growthFactor": 1, "scale": 1}}}, "bucket"),
    ({**COUNTER, "metricDescriptor": {"valueType": "DISTRIBUTION"}, "valueExtractor": 'REGEXP_EXTRACT(x, "(a)(b)")',
      "bucketOptions": {"linearBuckets": {"numFiniteBuckets": 3, "width": 1, "offset": 0}}}, "capture group"),
    ({**COUNTER, "valueExtractor": "EXTRACT(jsonPayload.x)"}, "only for DISTRIBUTION"),
    ({**COUNTER, "name": "/leading-slash"}, "Invalid metric name"),
    ({**COUNTER, "name": "x" * 101}, "Invalid metric name"),
])
def test_log_metric_refusals(enabled: ControlPlane, server: ControlPlaneServer, body: dict[str, Any],
                             message: str) -> None:
    status, answer = call(server, "POST", METRICS, body)
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert message in answer["error"]["message"]
    assert enabled.apis["logging"].metrics == {}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@requires_gcloud
def test_alert_policy_through_curl(enabled: ControlPlane, server: ControlPlaneServer, tmp_path: Path) -> None:
    environment = {"PATH": os.environ["PATH"], **gcloud_environment(server, tmp_path)}
    token = subprocess.run(["gcloud", "auth", "print-access-token"], capture_output=True, text=True,
                           env=environment, check=True).stdout.strip()
    assert token == enabled.token  # deploy.sh's curl calls get their token this way

    def curl(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        command = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {token}",
                   "-H", "Content-Type: application/json", f"http://google.fake/{url}"]
        if body is not None:
            command += ["--data", json.dumps(body)]
        output = subprocess.run(command, capture_output=True, text=True, env=environment, check=True).stdout
        text, status = output.rsplit("\n", 1)
        return int(status), json.loads(text)

    status, body = curl("POST", POLICIES, ALERT)
    assert status == 404 and body["error"]["message"].startswith(
        'Cannot find metric(s) that match type = "logging.googleapis.com/user/tokens".')
    assert call(server, "POST", METRICS, COUNTER)[0] == 200
    status, created = curl("POST", POLICIES, ALERT)
    assert status == 200 and created["name"].startswith("projects/my-project/alertPolicies/")
    assert enabled.apis["monitoring"].alert_policies[created["name"]]["enabled"] is True
    condition = created["conditions"][0]["name"]
    assert condition.startswith(f"{created['name']}/conditions/")

    status, listed = curl("GET", f"{POLICIES}?filter=display_name%3D%22token-service%20refusal%20rate%22")
    assert [policy["name"] for policy in listed["alertPolicies"]] == [created["name"]]
    assert curl("GET", f"{POLICIES}?filter=display_name%3D%22other%22") == (200, {})
    status, patched = curl("PATCH", f"monitoring/v3/{created['name']}?updateMask=display_name,documentation.content",
                           {"displayName": "renamed", "documentation": {"content": "new"}})
    assert status == 200 and patched["conditions"][0]["name"] == condition  # conditions keep their ids
    stored = enabled.apis["monitoring"].alert_policies[created["name"]]
    assert (stored["displayName"], stored["documentation"]["content"]) == ("renamed", "new")
    assert curl("DELETE", f"monitoring/v3/{created['name']}") == (200, {})
    assert enabled.apis["monitoring"].alert_policies == {}


def _alert(**changes: Any) -> dict[str, Any]:
    alert = copy.deepcopy(ALERT)
    threshold = alert["conditions"][0]["conditionThreshold"]
    for key, value in changes.items():
        (threshold if key in threshold or key == "aggregations" else alert)[key] = value
    return alert


@pytest.mark.parametrize("body, message", [
    ({**ALERT, "displayName": ""}, "displayName"),
    ({**ALERT, "combiner": "XOR"}, "combiner"),
    ({**ALERT, "conditions": []}, "one to six"),
    ({**ALERT, "conditions": [{"conditionThreshold": ALERT["conditions"][0]["conditionThreshold"]}]}, "displayName"),
    (_alert(comparison="GREATER"), "comparison"),
    (_alert(duration="90s"), "whole minutes"),
    (_alert(duration="5m"), "Duration"),
    (_alert(aggregations=[{"alignmentPeriod": "30s", "perSeriesAligner": "ALIGN_RATE"}]), "at least 60 seconds"),
    (_alert(aggregations=[{"perSeriesAligner": "ALIGN_RATE"}]), "alignment_period is required"),
    (_alert(aggregations=[{"alignmentPeriod": "60s", "crossSeriesReducer": "REDUCE_SUM"}]), "ALIGN_NONE"),
    (_alert(aggregations=[{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_FAST"}]), "per_series_aligner"),
    (_alert(filter='resource.type="cloud_run_revision"'), "metric.type"),
    ({**ALERT, "notificationChannels": ["channels/1"]}, "notification channel"),
])
def test_alert_policy_refusals(enabled: ControlPlane, server: ControlPlaneServer, body: dict[str, Any],
                               message: str) -> None:
    assert call(server, "POST", METRICS, COUNTER)[0] == 200
    status, answer = call(server, "POST", POLICIES, body)
    assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert message in answer["error"]["message"]
    assert enabled.apis["monitoring"].alert_policies == {}


def test_a_new_metric_can_take_time_to_reach_monitoring(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    enabled.apis["monitoring"].metric_visible_after = 600
    assert call(server, "POST", METRICS, COUNTER)[0] == 200
    assert call(server, "POST", POLICIES, ALERT)[0] == 404
    enabled.apis["monitoring"].metric_visible_after = 0
    assert call(server, "POST", POLICIES, ALERT)[0] == 200


def test_missing_metric_and_policy_are_404(enabled: ControlPlane, server: ControlPlaneServer) -> None:
    status, body = call(server, "GET", f"{METRICS}/nope")
    assert (status, body["error"]) == (404, {"code": 404, "message": "Metric nope does not exist.",
                                             "status": "NOT_FOUND"})
    for method in ("GET", "PATCH", "DELETE"):
        status, body = call(server, method, f"{POLICIES}/123", {} if method == "PATCH" else None)
        assert (status, body["error"]["status"]) == (404, "NOT_FOUND")
