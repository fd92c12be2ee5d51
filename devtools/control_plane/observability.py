"""Cloud Logging v2 log-based metrics; Monitoring v3 alert policies live in ``alert_policies``.

The rules are the ones the LogMetric reference states: a filter is required,
a user metric is DELTA and INT64 or DISTRIBUTION (the latter with a value
extractor and bucket options), every descriptor label has exactly one label
extractor, and once created a metric's kind and value type cannot change nor
may its labels be removed or altered (new labels may be added).
"""

from __future__ import annotations

import datetime
import itertools
import re
import time
from typing import Any
from urllib.parse import unquote

from devtools.control_plane.alert_policies import MonitoringApi
from devtools.control_plane.server import Api, ControlPlane, GoogleError, Request, invalid, one_of, require

USER_METRIC = "logging.googleapis.com/user/"
_METRIC_ID = re.compile(r"[A-Za-z0-9_\-.,+!*',()%][A-Za-z0-9_\-.,+!*',()%/]{0,99}")
_EXTRACTOR = re.compile(r"(EXTRACT\(\s*[\w.\-\[\]\"']+\s*\)|REGEXP_EXTRACT\(\s*[\w.\-\[\]\"']+\s*,\s*\"(.*)\"\s*\))",
                        re.S)
METRIC_KINDS = ("METRIC_KIND_UNSPECIFIED", "GAUGE", "DELTA", "CUMULATIVE")
VALUE_TYPES = ("VALUE_TYPE_UNSPECIFIED", "BOOL", "INT64", "DOUBLE", "STRING", "DISTRIBUTION", "MONEY")
LABEL_TYPES = ("STRING", "BOOL", "INT64")
_OUTPUT_ONLY = ("name", "resourceName", "createTime", "updateTime", "version")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_extractor(expression: Any, field: str) -> None:
    match = _EXTRACTOR.fullmatch(expression.strip()) if isinstance(expression, str) else None
    if not match:
        raise invalid(f"{field}: '{expression}' is not an extractor: use EXTRACT(field) or "
                      "REGEXP_EXTRACT(field, \"regex\")")
    if match.group(2) is not None and re.compile(match.group(2)).groups != 1:
        raise invalid(f"{field}: the regular expression must have exactly one capture group")


def check_buckets(options: Any) -> None:
    kinds = [kind for kind in ("linearBuckets", "exponentialBuckets", "explicitBuckets")
             if isinstance(options, dict) and kind in options]
    if len(kinds) != 1:
        raise invalid("bucket_options: set exactly one of linear_buckets, exponential_buckets, explicit_buckets")
    buckets = options[kinds[0]] or {}
    try:
        if kinds[0] == "explicitBuckets":
            bounds = [float(bound) for bound in buckets.get("bounds") or []]
            valid = bool(bounds) and all(low < high for low, high in itertools.pairwise(bounds))
        elif kinds[0] == "exponentialBuckets":
            valid = (int(buckets.get("numFiniteBuckets", 0)) > 0 and float(buckets.get("growthFactor", 0)) > 1
                     and float(buckets.get("scale", 0)) > 0)
        else:
            valid = int(buckets.get("numFiniteBuckets", 0)) > 0 and float(buckets.get("width", 0)) > 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise invalid(f"bucket_options.{kinds[0]}: invalid bucket boundaries {buckets}")


class LoggingApi(Api):
    prefix = "logging"
    service = "logging.googleapis.com"

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        self.metrics: dict[str, dict[str, Any]] = {}  # metric id -> the LogMetric as Google returns it
        self.created_at: dict[str, float] = {}  # metric id -> time.monotonic() at creation, for Monitoring's delay
        base = r"/v2/projects/([^/]+)/metrics"
        self.route("GET", base, self.list)
        self.route("POST", base, self.create, "create")
        self.route("GET", rf"{base}/(.+)", self.get)
        self.route("PUT", rf"{base}/(.+)", self.update, "update")
        self.route("DELETE", rf"{base}/(.+)", self.delete, "delete")

    def lookup(self, project: str, metric_id: str) -> dict[str, Any]:
        self.plane.project(project)
        metric = self.metrics.get(unquote(metric_id))
        if metric is None:
            raise GoogleError(404, f"Metric {unquote(metric_id)} does not exist.", "NOT_FOUND")
        return metric

    def check(self, body: dict[str, Any], project_id: str) -> dict[str, Any]:
        """The metric as stored: validated, with the descriptor's output-only fields filled in."""
        metric_id = body.get("name") or ""
        if not _METRIC_ID.fullmatch(metric_id):
            raise invalid(f"Invalid metric name '{metric_id}': at most 100 characters from A-Z a-z 0-9 "
                          "_-.,+!*',()%/, not starting with '/'")
        require(body, "filter")
        if len(body["filter"]) > 20000 or len(body.get("description") or "") > 8000:
            raise invalid("filter is limited to 20000 characters and description to 8000")
        descriptor = dict(body.get("metricDescriptor") or {})
        descriptor.setdefault("metricKind", "DELTA")
        descriptor.setdefault("valueType", "INT64")
        one_of(descriptor["metricKind"], METRIC_KINDS, "metric.metric_descriptor.metric_kind")
        one_of(descriptor["valueType"], VALUE_TYPES, "metric.metric_descriptor.value_type")
        if descriptor["metricKind"] != "DELTA" or descriptor["valueType"] not in ("INT64", "DISTRIBUTION"):
            raise invalid(f"A logs-based metric must be DELTA with value type INT64 or DISTRIBUTION, not "
                          f"{descriptor['metricKind']} {descriptor['valueType']}")
        if descriptor["valueType"] == "DISTRIBUTION":
            if not body.get("valueExtractor"):
                raise invalid("A DISTRIBUTION metric requires a value_extractor")
            if not body.get("bucketOptions"):
                raise invalid("A DISTRIBUTION metric requires bucket_options")
            check_buckets(body["bucketOptions"])
        elif body.get("valueExtractor") or body.get("bucketOptions"):
            raise invalid("value_extractor and bucket_options are only for DISTRIBUTION metrics")
        if body.get("valueExtractor"):
            check_extractor(body["valueExtractor"], "value_extractor")
        labels = descriptor.get("labels") or []
        keys = [label.get("key") for label in labels]
        for label in labels:
            if not label.get("key") or keys.count(label["key"]) > 1:
                raise invalid(f"metric_descriptor.labels: missing or repeated label key {label.get('key')!r}")
            one_of(label.setdefault("valueType", "STRING"), LABEL_TYPES, "metric.metric_descriptor.labels.value_type")
        extractors = body.get("labelExtractors") or {}
        for key, expression in extractors.items():
            if key not in keys:
                raise invalid(f"label_extractors: label '{key}' is not declared in metric_descriptor.labels")
            check_extractor(expression, f"label_extractors[{key}]")
        missing = [key for key in keys if key not in extractors]
        if missing:
            raise invalid(f"metric_descriptor.labels {missing} have no label extractor")
        descriptor.setdefault("unit", "1")
        descriptor.update({"name": f"projects/{project_id}/metricDescriptors/{USER_METRIC}{metric_id}",
                           "type": f"{USER_METRIC}{metric_id}", "description": body.get("description", "")})
        metric = {key: value for key, value in body.items() if key not in _OUTPUT_ONLY}
        return {**metric, "name": metric_id, "metricDescriptor": descriptor,
                "resourceName": f"projects/{project_id}/metrics/{metric_id}"}

    def list(self, request: Request, project: str) -> dict[str, Any]:
        self.plane.project(project)
        return {"metrics": [self.metrics[key] for key in sorted(self.metrics)]} if self.metrics else {}

    def get(self, request: Request, project: str, metric_id: str) -> dict[str, Any]:
        return self.lookup(project, metric_id)

    def create(self, request: Request, project: str) -> dict[str, Any]:
        project_id = self.plane.project(project)
        metric = self.check(request.json(), project_id)
        if metric["name"] in self.metrics:
            raise GoogleError(409, f"Metric {metric['name']} already exists.", "ALREADY_EXISTS")
        metric["createTime"] = metric["updateTime"] = now()
        self.metrics[metric["name"]] = metric
        self.created_at[metric["name"]] = time.monotonic()
        return metric

    def update(self, request: Request, project: str, metric_id: str) -> dict[str, Any]:
        existing = self.lookup(project, metric_id)
        body = {**request.json(), "name": existing["name"]}
        old, new = existing["metricDescriptor"], body.get("metricDescriptor") or {}
        for field, default in (("metricKind", "DELTA"), ("valueType", "INT64")):
            if old[field] != new.get(field, default):
                raise invalid(f"metric_descriptor.{field} cannot be changed once set "
                              f"({old[field]} -> {new.get(field, default)})")
        metric = self.check(body, self.plane.project(project))
        new = metric["metricDescriptor"]
        new_labels = {label["key"]: label for label in new.get("labels") or []}
        for label in old.get("labels") or []:
            changed = {k: v for k, v in (new_labels.get(label["key"]) or {}).items() if k != "description"}
            if changed != {k: v for k, v in label.items() if k != "description"}:
                raise invalid(f"metric_descriptor.labels: existing label '{label['key']}' cannot be removed or "
                              "modified (only its description); new labels may be added")
        metric["createTime"], metric["updateTime"] = existing["createTime"], now()
        self.metrics[metric["name"]] = metric
        return metric

    def delete(self, request: Request, project: str, metric_id: str) -> dict[str, Any]:
        metric = self.lookup(project, metric_id)
        del self.metrics[metric["name"]]
        return {}


APIS: tuple[type[Api], ...] = (LoggingApi, MonitoringApi)
