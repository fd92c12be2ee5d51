"""Cloud Monitoring v3 alert policies with metric-threshold conditions (deploy.sh calls them with curl).

Checked as the AlertPolicy reference states: one to six conditions, each with a
display name and a threshold whose filter names an existing metric (a log-based
metric must exist in Logging, otherwise Monitoring answers 404 "Cannot find
metric(s)"), known enum values, durations that are whole minutes, alignment
periods of at least 60 s, and the aligner/reducer pairing the Aggregation
message requires.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

from devtools.control_plane.server import Api, ControlPlane, GoogleError, Request, invalid, one_of, require

COMBINERS = ("AND", "OR", "AND_WITH_MATCHING_RESOURCE")
COMPARISONS = ("COMPARISON_GT", "COMPARISON_GE", "COMPARISON_LT", "COMPARISON_LE", "COMPARISON_EQ", "COMPARISON_NE")
ALIGNERS = ("ALIGN_NONE", "ALIGN_DELTA", "ALIGN_RATE", "ALIGN_INTERPOLATE", "ALIGN_NEXT_OLDER", "ALIGN_MIN",
            "ALIGN_MAX", "ALIGN_MEAN", "ALIGN_COUNT", "ALIGN_SUM", "ALIGN_STDDEV", "ALIGN_COUNT_TRUE",
            "ALIGN_COUNT_FALSE", "ALIGN_FRACTION_TRUE", "ALIGN_PERCENTILE_99", "ALIGN_PERCENTILE_95",
            "ALIGN_PERCENTILE_50", "ALIGN_PERCENTILE_05", "ALIGN_PERCENT_CHANGE")
REDUCERS = ("REDUCE_NONE", "REDUCE_MEAN", "REDUCE_MIN", "REDUCE_MAX", "REDUCE_SUM", "REDUCE_STDDEV", "REDUCE_COUNT",
            "REDUCE_COUNT_TRUE", "REDUCE_COUNT_FALSE", "REDUCE_FRACTION_TRUE", "REDUCE_PERCENTILE_99",
            "REDUCE_PERCENTILE_95", "REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_05")
_DURATION = re.compile(r"(\d+)(\.\d{1,9})?s")
_METRIC_TYPE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')
_FILTER = re.compile(r'\s*(display_name|displayName)\s*([=:])\s*"((?:[^"\\]|\\.)*)"\s*')
_UPDATABLE = ("display_name", "documentation", "user_labels", "conditions", "combiner", "enabled",
              "notification_channels", "alert_strategy", "severity", "documentation.content",
              "documentation.mime_type", "documentation.subject")
CALLER = "fake-caller@example.com"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds(value: Any, field: str) -> float:
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise invalid(f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Duration), {value!r}")
    return float(match.group(1) + (match.group(2) or ""))


def camel(path: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), path)


class MonitoringApi(Api):
    prefix = "monitoring"
    service = "monitoring.googleapis.com"

    def __init__(self, plane: ControlPlane):
        super().__init__(plane)
        self.alert_policies: dict[str, dict[str, Any]] = {}  # projects/<id>/alertPolicies/<n> -> policy
        # A new log-based metric reaches Monitoring "within up to 10 minutes"; a test may set a delay here.
        self.metric_visible_after = 0.0
        base = r"/v3/projects/([^/]+)/alertPolicies"
        self.route("GET", base, self.list)
        self.route("POST", base, self.create, "create")
        self.route("GET", rf"{base}/([^/:]+)", self.get)
        self.route("PATCH", rf"{base}/([^/:]+)", self.patch, "update")
        self.route("DELETE", rf"{base}/([^/:]+)", self.delete, "delete")

    def lookup(self, project: str, policy_id: str) -> tuple[str, dict[str, Any]]:
        name = f"projects/{self.plane.project(project)}/alertPolicies/{policy_id}"
        if name not in self.alert_policies:
            raise GoogleError(404, f"Requested entity was not found. Alert policy {name} does not exist.",
                              "NOT_FOUND")
        return name, self.alert_policies[name]

    def _metric_exists(self, metric_type: str) -> bool:
        if not metric_type.startswith("logging.googleapis.com/user/"):
            return True  # built-in metrics are not modelled: every other type is taken to exist
        logging = self.plane.apis.get("logging")
        if logging is None or metric_type.removeprefix("logging.googleapis.com/user/") not in logging.metrics:
            return False
        created = logging.created_at.get(metric_type.removeprefix("logging.googleapis.com/user/"), 0.0)
        return time.monotonic() - created >= self.metric_visible_after

    def check_condition(self, condition: dict[str, Any], index: int) -> None:
        field = f"alert_policy.conditions[{index}]"
        require(condition, "displayName")
        kinds = [key for key in condition if key.startswith("condition")]
        if kinds != ["conditionThreshold"]:
            raise invalid(f"{field}: this fake models conditionThreshold only, got {kinds or 'no condition'}")
        threshold = condition["conditionThreshold"]
        require(threshold, "filter")
        one_of(threshold.get("comparison"), COMPARISONS, f"{field}.condition_threshold.comparison")
        duration = seconds(threshold.get("duration", "0s"), f"{field}.condition_threshold.duration")
        if duration % 60:
            raise invalid(f"{field}.condition_threshold.duration: only whole minutes are supported, got {duration}s")
        for position, aggregation in enumerate(threshold.get("aggregations") or []):
            where = f"{field}.condition_threshold.aggregations[{position}]"
            aligner = aggregation.get("perSeriesAligner", "ALIGN_NONE")
            reducer = aggregation.get("crossSeriesReducer", "REDUCE_NONE")
            one_of(aligner, ALIGNERS, f"{where}.per_series_aligner")
            one_of(reducer, REDUCERS, f"{where}.cross_series_reducer")
            period = aggregation.get("alignmentPeriod")
            if period is not None and seconds(period, f"{where}.alignment_period") < 60:
                raise invalid(f"{where}.alignment_period must be at least 60 seconds, got {period}")
            if aligner != "ALIGN_NONE" and period is None:
                raise invalid(f"{where}: an alignment_period is required with per_series_aligner {aligner}")
            if reducer != "REDUCE_NONE" and aligner == "ALIGN_NONE":
                raise invalid(f"{where}: cross_series_reducer {reducer} requires a per_series_aligner other than "
                              "ALIGN_NONE")
        types = _METRIC_TYPE.findall(threshold["filter"])
        if not types:
            raise invalid(f"{field}.condition_threshold.filter must name a metric.type: {threshold['filter']!r}")
        for metric_type in types:
            if not self._metric_exists(metric_type):
                raise GoogleError(404, f'Cannot find metric(s) that match type = "{metric_type}". If a metric was '
                                  "created recently, it could take up to 10 minutes to become available. Please "
                                  "try again soon.", "NOT_FOUND")

    def check(self, policy: dict[str, Any]) -> None:
        require(policy, "displayName")
        if len(policy["displayName"]) > 512:
            raise invalid("alert_policy.display_name is limited to 512 characters")
        conditions = policy.get("conditions") or []
        if not 1 <= len(conditions) <= 6:
            raise invalid(f"An alert policy has from one to six conditions, got {len(conditions)}")
        combiner = policy.get("combiner", "COMBINE_UNSPECIFIED")
        if combiner != "COMBINE_UNSPECIFIED" or len(conditions) > 1:
            one_of(combiner, COMBINERS, "alert_policy.combiner")
        for index, condition in enumerate(conditions):
            self.check_condition(condition, index)
        for channel in policy.get("notificationChannels") or []:
            match = re.fullmatch(r"projects/([^/]+)/notificationChannels/([^/]+)", channel)
            if not match:
                raise invalid(f"Invalid notification channel name '{channel}': expected "
                              "projects/[PROJECT_ID_OR_NUMBER]/notificationChannels/[CHANNEL_ID]")
            self.plane.project(match.group(1))
        documentation = policy.get("documentation")
        if documentation:
            one_of(documentation.setdefault("mimeType", "text/markdown"), ("text/markdown",),
                   "alert_policy.documentation.mime_type")

    def _store(self, name: str, policy: dict[str, Any], created: dict[str, Any] | None) -> dict[str, Any]:
        """Name the policy and its conditions (a condition keeps its id across updates) and record the change."""
        for condition in policy["conditions"]:
            if not str(condition.get("name", "")).startswith(f"{name}/conditions/"):
                condition["name"] = f"{name}/conditions/{int(self.plane.next_id()) * 7919}"
        record = {"mutateTime": now(), "mutatedBy": CALLER}
        stored = {**policy, "name": name, "enabled": policy.get("enabled", True),
                  "creationRecord": created or record, "mutationRecord": record}
        stored.setdefault("combiner", "COMBINE_UNSPECIFIED")
        self.alert_policies[name] = stored
        return stored

    def create(self, request: Request, project: str) -> dict[str, Any]:
        policy = {k: v for k, v in request.json().items() if k not in ("name", "creationRecord", "mutationRecord")}
        self.check(policy)
        name = f"projects/{self.plane.project(project)}/alertPolicies/{int(self.plane.next_id()) * 104729}"
        return self._store(name, policy, None)

    def get(self, request: Request, project: str, policy_id: str) -> dict[str, Any]:
        return self.lookup(project, policy_id)[1]

    def list(self, request: Request, project: str) -> dict[str, Any]:
        prefix = f"projects/{self.plane.project(project)}/alertPolicies/"
        policies = [policy for name, policy in sorted(self.alert_policies.items()) if name.startswith(prefix)]
        text = request.arg("filter")
        if text:
            match = _FILTER.fullmatch(text)
            if not match:
                raise invalid(f"Invalid filter '{text}': this fake supports display_name=\"...\" or :\"...\"")
            value = re.sub(r"\\(.)", r"\1", match.group(3))
            policies = [policy for policy in policies if (policy["displayName"] == value if match.group(2) == "="
                                                          else value.lower() in policy["displayName"].lower())]
        return {"alertPolicies": policies, "totalSize": len(policies)} if policies else {}

    def patch(self, request: Request, project: str, policy_id: str) -> dict[str, Any]:
        name, existing = self.lookup(project, policy_id)
        body = request.json()
        mask = request.arg("updateMask")
        if mask:
            updated = {k: v for k, v in existing.items() if k not in ("creationRecord", "mutationRecord")}
            for path in mask.split(","):
                if path not in _UPDATABLE and camel(path) not in (camel(p) for p in _UPDATABLE):
                    raise invalid(f"Invalid update_mask path '{path}'")
                top, _, sub = camel(path).partition(".")
                source = body.get(top) or {}
                if sub:
                    updated.setdefault(top, {})[sub] = source.get(sub)
                elif top in body:
                    updated[top] = body[top]
                else:
                    updated.pop(top, None)
        else:  # without a mask the policy in the request replaces the stored one
            updated = {k: v for k, v in body.items() if k not in ("name", "creationRecord", "mutationRecord")}
        self.check(updated)
        return self._store(name, updated, existing["creationRecord"])

    def delete(self, request: Request, project: str, policy_id: str) -> dict[str, Any]:
        name, _ = self.lookup(project, policy_id)
        del self.alert_policies[name]
        return {}
