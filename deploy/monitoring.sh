# shellcheck shell=bash
# Log-based metrics (gcloud logging, GA) and an alert policy. gcloud has no GA command for alert
# policies, so they go through the Monitoring REST API with gcloud's access token.

MONITORING_API=${CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING:-https://monitoring.googleapis.com/}

# monitoring METHOD PATH [BODY_FILE]: one REST call; the response on stdout, failures stop the script.
monitoring() {
  local method=$1 path=$2 body=${3:-}
  local -a data=()
  [[ -z $body ]] || data=(--data "@$body")
  printf '+ curl -X %s %s%s%s\n' "$method" "$MONITORING_API" "$path" "${body:+ --data @$body}" >&3
  [[ $DRY_RUN == 1 ]] && return 0
  curl --silent --show-error --fail-with-body -X "$method" -H "Content-Type: application/json" \
    -H "Authorization: Bearer $(gcloud auth print-access-token --quiet)" "${data[@]}" "$MONITORING_API$path" ||
    { printf '\ndeploy.sh: the Monitoring API refused %s %s (above)\n' "$method" "$path" >&2; exit 3; }
}

write_metric() {  # NAME, filter suffix, the rest of the LogMetric
  local filter="resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"$FUNCTION\" AND labels.event=\"token\"$2"
  local body
  body=$(printf 'filter: %s\n%s\n' "'$filter'" "$3")
  printf 'name: %s\ndescription: "token service audit lines %s"\n%s\n' "$1" "$(digest <<<"$body")" "$body" \
    >"$DEPLOY_DIR/metric-$1.yaml"
}

setup_metrics() {
  # The audit line's labels are LogEntry labels; upstream_seconds is a jsonPayload field.
  write_metric token_service_tokens_issued ' AND labels.outcome="issued"' \
    'metricDescriptor: {metricKind: DELTA, valueType: INT64, unit: "1"}'
  write_metric token_service_refusals ' AND labels.outcome="refused"' \
    'labelExtractors: {reason: EXTRACT(labels.reason)}
metricDescriptor: {metricKind: DELTA, valueType: INT64, unit: "1", labels: [{key: reason, valueType: STRING}]}'
  write_metric token_service_upstream_latency ' AND jsonPayload.upstream_seconds>0' \
    'valueExtractor: EXTRACT(jsonPayload.upstream_seconds)
bucketOptions: {exponentialBuckets: {numFiniteBuckets: 32, growthFactor: 1.4, scale: 0.005}}
metricDescriptor: {metricKind: DELTA, valueType: DISTRIBUTION, unit: s}'
  local metric listed described wanted
  listed=$(read_state "${G[@]}" logging metrics list --format='value(name)') || exit 3
  for metric in "${METRICS[@]}"; do
    wanted=$(sed -n 's/^description: "\(.*\)"$/\1/p' "$DEPLOY_DIR/metric-$metric.yaml")
    if grep -qxF "$metric" <<<"$listed"; then
      described=$(read_state "${G[@]}" logging metrics describe "$metric" --format='value(description)') || exit 3
      [[ $described == "$wanted" ]] ||
        run "${G[@]}" logging metrics update "$metric" --config-from-file="$DEPLOY_DIR/metric-$metric.yaml"
    else
      run "${G[@]}" logging metrics create "$metric" --config-from-file="$DEPLOY_DIR/metric-$metric.yaml"
    fi
  done
}

write_alert_policy() {
  local channels='[]' threshold
  [[ -z $NOTIFICATION_CHANNEL ]] || channels="[\"$NOTIFICATION_CHANNEL\"]"
  threshold=$(awk "BEGIN {print $ALERT_THRESHOLD / 60}")
  ALERT_FILE=$DEPLOY_DIR/alert-refusals.json
  local body
  body=$(cat <<EOT
"combiner": "OR",
"conditions": [{
  "displayName": "more than $ALERT_THRESHOLD refusals per minute for 5 minutes",
  "conditionThreshold": {
    "filter": "metric.type=\"logging.googleapis.com/user/token_service_refusals\" AND resource.type=\"cloud_run_revision\"",
    "aggregations": [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_RATE", "crossSeriesReducer": "REDUCE_SUM"}],
    "comparison": "COMPARISON_GT", "thresholdValue": $threshold, "duration": "300s"}}],
"documentation": {"content": "Refusals by reason: README Troubleshooting; in Logs Explorer: labels.outcome=\"refused\"", "mimeType": "text/markdown"},
"notificationChannels": $channels
EOT
)
  ALERT_DIGEST=$(digest <<<"$body")
  printf '{"displayName": "%s", "userLabels": {"token_service": "%s"},\n%s}\n' "$ALERT_NAME" "$ALERT_DIGEST" "$body" \
    >"$ALERT_FILE"
}

# The alert policy's name and digest label, or nothing: "NAME DIGEST".
find_alert_policy() {
  local answer name label
  answer=$(monitoring GET "v3/projects/$PROJECT/alertPolicies?filter=display_name%3D%22${ALERT_NAME// /%20}%22") || exit 3
  name=$(grep -o '"name": *"projects/[^"/]*/alertPolicies/[^"/]*"' <<<"$answer" | head -n1 | cut -d'"' -f4) || true
  label=$(grep -o '"token_service": *"[^"]*"' <<<"$answer" | head -n1 | cut -d'"' -f4) || true
  printf '%s %s' "$name" "$label"
}

# A new log-based metric can take minutes before Monitoring accepts an alert on it: retry while
# the answer is "Cannot find metric(s)", and only then.
create_alert_policy() {
  local attempt answer
  for attempt in $(seq 1 "${ALERT_RETRIES:-20}"); do
    if answer=$( (monitoring POST "v3/projects/$PROJECT/alertPolicies" "$ALERT_FILE") 2>&1); then return 0; fi
    [[ $answer == *"Cannot find metric"* && $attempt -lt ${ALERT_RETRIES:-20} ]] || { printf '%s\n' "$answer" >&2; exit 3; }
    printf 'the new log-based metrics are not visible to Monitoring yet; retrying in %ss\n' \
      "${ALERT_RETRY_SECONDS:-30}" >&3
    sleep "${ALERT_RETRY_SECONDS:-30}"
  done
}

setup_monitoring() {
  say "8. Log-based metrics and an alert on the refusal rate"
  setup_metrics
  write_alert_policy
  local found found_digest
  found=$(find_alert_policy) || exit 3
  read -r ALERT_POLICY found_digest <<<"$found"
  if [[ -z ${ALERT_POLICY:-} ]]; then
    create_alert_policy
  elif [[ ${found_digest:-} != "$ALERT_DIGEST" ]]; then
    monitoring PATCH "v3/$ALERT_POLICY" "$ALERT_FILE" >/dev/null
  fi
}
