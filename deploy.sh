#!/usr/bin/env bash
# deploy.sh: from an empty Google Cloud project to a working mTLS token service.
#
# Cloud Function (2nd gen) behind a global external Application Load Balancer with
# frontend mTLS, reached through a serverless NEG. Every step checks before it
# creates, so a second run changes nothing and succeeds. See README "Deployment".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<'EOF'
Usage: ./deploy.sh --project PROJECT_ID --fqdn token.example.com --ca-cert ca.pem [options]

Required (flags or environment variables):
  --project ID              Google Cloud project id                          (PROJECT)
  --fqdn NAME               public DNS name of the load balancer; the issuer  (FQDN)
                            is https://NAME
  --ca-cert FILE            PEM root CA trusted for client certificates; repeatable
Options:
  --intermediate-cert FILE  PEM intermediate CA; repeatable
  --region REGION           function and NEG region (REGION, default us-central1)
  --project-number N        skip looking it up (PROJECT_NUMBER)
  --pool ID                 workload identity pool id (POOL_ID, default token-service)
  --provider ID             provider id (PROVIDER_ID, default token-service)
  --function NAME           function name, also the prefix of LB resources (FUNCTION_NAME, default token-service)
  --client-id-header NAME   MTLS_HEADER_CLIENT_ID (default X-Client-Cert-Hash)
  --runtime RUNTIME         Python runtime (default python313)
  --concurrency N           requests per instance (default 16)
  --cpu N                   vCPUs per instance (default 2): one worker per vCPU, THREADS = concurrency
  --min-instances N         (default 0)      --max-instances N   (default 20)
  --with-monitoring         also create log-based metrics (tokens issued, refusals by reason, upstream
                            latency) and an alerting policy on the refusal rate
  --alert-refusals-per-minute N   the alert threshold (default 10)
  --notification-channel ID       where the alert goes (projects/P/notificationChannels/N; optional)
  --dry-run                 print every gcloud command, run none (files are still generated)
  --destroy                 delete what this script creates, in reverse order, after asking
  --yes                     do not ask before --destroy
  -h, --help
EOF
}

fail() { printf 'deploy.sh: %s\n' "$*" >&2; exit 2; }

PROJECT=${PROJECT:-}
FQDN=${FQDN:-}
REGION=${REGION:-us-central1}
PROJECT_NUMBER=${PROJECT_NUMBER:-}
POOL_ID=${POOL_ID:-token-service}
PROVIDER_ID=${PROVIDER_ID:-token-service}
FUNCTION=${FUNCTION_NAME:-token-service}
CLIENT_ID_HEADER=${CLIENT_ID_HEADER:-X-Client-Cert-Hash}
RUNTIME=${RUNTIME:-python313}
CONCURRENCY=${CONCURRENCY:-16}
CPU=${CPU:-2}
MIN_INSTANCES=${MIN_INSTANCES:-0}
MAX_INSTANCES=${MAX_INSTANCES:-20}
DEPLOY_DIR=${DEPLOY_DIR:-$ROOT/.deploy}
CA_CERTS=()
INTERMEDIATE_CERTS=()
DRY_RUN=0
DESTROY=0
MONITORING=0
ALERT_THRESHOLD=${ALERT_THRESHOLD:-10}
NOTIFICATION_CHANNEL=${NOTIFICATION_CHANNEL:-}
YES=0

while [[ $# -gt 0 ]]; do
  case $1 in
    --project) PROJECT=${2:-}; shift 2 ;;
    --fqdn) FQDN=${2:-}; shift 2 ;;
    --ca-cert) CA_CERTS+=("${2:-}"); shift 2 ;;
    --intermediate-cert) INTERMEDIATE_CERTS+=("${2:-}"); shift 2 ;;
    --region) REGION=${2:-}; shift 2 ;;
    --project-number) PROJECT_NUMBER=${2:-}; shift 2 ;;
    --pool) POOL_ID=${2:-}; shift 2 ;;
    --provider) PROVIDER_ID=${2:-}; shift 2 ;;
    --function) FUNCTION=${2:-}; shift 2 ;;
    --client-id-header) CLIENT_ID_HEADER=${2:-}; shift 2 ;;
    --runtime) RUNTIME=${2:-}; shift 2 ;;
    --concurrency) CONCURRENCY=${2:-}; shift 2 ;;
    --cpu) CPU=${2:-}; shift 2 ;;
    --min-instances) MIN_INSTANCES=${2:-}; shift 2 ;;
    --max-instances) MAX_INSTANCES=${2:-}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --with-monitoring) MONITORING=1; shift ;;
    --alert-refusals-per-minute) ALERT_THRESHOLD=${2:-}; shift 2 ;;
    --notification-channel) NOTIFICATION_CHANNEL=${2:-}; shift 2 ;;
    --destroy) DESTROY=1; shift ;;
    --yes) YES=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done

# ---- validation: every problem at once, before any gcloud call --------------------------------
problems=()
[[ -n $PROJECT ]] || problems+=("--project is required")
[[ $PROJECT =~ ^$|^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || problems+=("--project '$PROJECT' is not a project id")
if [[ -z $FQDN && $DESTROY == 0 ]]; then
  problems+=("--fqdn is required: the public DNS name clients and Google use (the issuer is https://FQDN)")
elif [[ -n $FQDN && ! $FQDN =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$ ]]; then
  problems+=("--fqdn '$FQDN' is not a lower-case DNS name (no scheme, port or path)")
fi
[[ -z $PROJECT_NUMBER || $PROJECT_NUMBER =~ ^[1-9][0-9]*$ ]] ||
  problems+=("--project-number '$PROJECT_NUMBER' is not numeric (gcloud projects describe ID --format='value(projectNumber)')")
for id in "$POOL_ID" "$PROVIDER_ID"; do
  [[ $id =~ ^[a-z0-9-]{4,32}$ && $id != gcp-* ]] || problems+=("pool/provider id '$id' must be 4-32 of a-z, 0-9, -")
done
[[ $FUNCTION =~ ^[a-z][a-z0-9-]{0,40}[a-z0-9]$ ]] || problems+=("--function '$FUNCTION' is not a valid function name")
[[ $REGION =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || problems+=("--region '$REGION' is not a region")
for number in "$CONCURRENCY" "$CPU" "$MIN_INSTANCES" "$MAX_INSTANCES" "$ALERT_THRESHOLD"; do
  [[ $number =~ ^[0-9]+$ ]] || problems+=("'$number' is not a whole number")
done
if [[ $DESTROY == 0 ]]; then
  [[ ${#CA_CERTS[@]} -gt 0 ]] || problems+=("--ca-cert is required: the PEM root CA of your client certificates")
  for file in "${CA_CERTS[@]}" "${INTERMEDIATE_CERTS[@]}"; do
    if [[ ! -r $file ]]; then
      problems+=("cannot read CA file '$file'")
    elif ! grep -q -- '-----BEGIN CERTIFICATE-----' "$file"; then
      problems+=("'$file' is not a PEM certificate (it must contain -----BEGIN CERTIFICATE-----)")
    elif command -v openssl >/dev/null && ! openssl x509 -in "$file" -noout 2>/dev/null; then
      problems+=("'$file' holds a PEM block that is not a valid X.509 certificate")
    fi
  done
fi
if [[ ${#problems[@]} -gt 0 ]]; then
  printf 'deploy.sh: nothing was created:\n' >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 2
fi

# ---- names ------------------------------------------------------------------------------------
SA_NAME=$FUNCTION
SA_EMAIL=$SA_NAME@$PROJECT.iam.gserviceaccount.com
IP_NAME=$FUNCTION-ip
CERT_NAME=$FUNCTION-cert
NEG_NAME=$FUNCTION-neg
BACKEND=$FUNCTION-backend
URL_MAP=$FUNCTION-url-map
PROXY=$FUNCTION-proxy
FORWARDING_RULE=$FUNCTION-https
TRUST_CONFIG=$FUNCTION-ca
TLS_POLICY=$FUNCTION-mtls
G=(gcloud --project="$PROJECT" --quiet)

# Every mTLS variable the function reads, with the header names it expects (README configuration).
MTLS_HEADERS=(
  'X-Client-Cert-Present:{client_cert_present}'
  'X-Client-Cert-Chain-Verified:{client_cert_chain_verified}'
  'X-Client-Cert-Error:{client_cert_error}'
  'X-Client-Cert-Hash:{client_cert_sha256_fingerprint}'
  'X-Client-Cert-Serial-Number:{client_cert_serial_number}'
  'X-Client-Cert-SPIFFE:{client_cert_spiffe_id}'
  'X-Client-Cert-URI-SANs:{client_cert_uri_sans}'
  'X-Client-Cert-DNSName-SANs:{client_cert_dnsname_sans}'
  'X-Client-Cert-Valid-Not-Before:{client_cert_valid_not_before}'
  'X-Client-Cert-Valid-Not-After:{client_cert_valid_not_after}'
)
ATTRIBUTE_MAPPING="google.subject=assertion.client_id,attribute.client_x5_spiffe=assertion.client.x5_spiffe,\
attribute.client_x5_dnssan=assertion.client.x5_dnssan,attribute.client_x5_urisan=assertion.client.x5_urisan,\
attribute.client_x5_sha256=assertion.client.x5_sha256,attribute.client_x5_serial=assertion.client.x5_serial"

exec 3>&1  # the console, also from inside $(...)
say() { printf '\n== %s\n' "$*"; }
show() { { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3; }
# run CMD...: print it, and run it unless --dry-run.
run() { show "$@"; [[ $DRY_RUN == 1 ]] || "$@"; }
# exists CMD...: does the resource exist? (--dry-run prints the check and answers no)
exists() {
  show "$@"
  [[ $DRY_RUN == 0 ]] && "$@" >/dev/null 2>&1
}
# value PLACEHOLDER CMD...: a describe's value (the placeholder under --dry-run)
value() {
  local placeholder=$1; shift
  show "$@"
  if [[ $DRY_RUN == 1 ]]; then printf '%s' "$placeholder"; else "$@"; fi
}
# lookup CMD...: like value, but empty when the resource does not exist yet
lookup() {
  show "$@"
  [[ $DRY_RUN == 1 ]] || "$@" 2>/dev/null || true
}

# One line of PEM with \n escapes, as TrustConfig YAML wants it.
pem_line() { sed 's/^[ ]*//' "$1" | awk 'NF {printf "%s\\n", $0}'; }

destroy() {
  if [[ $YES == 0 ]]; then
    printf 'This deletes the token service "%s" and its load balancer, mTLS policy, workload identity\n' "$FUNCTION"
    printf 'pool "%s" and service account in project "%s". Type the project id to confirm: ' "$POOL_ID" "$PROJECT"
    read -r answer
    [[ $answer == "$PROJECT" ]] || fail "not confirmed; nothing deleted"
  fi
  say "Deleting in reverse order"
  if exists "${G[@]}" compute forwarding-rules describe "$FORWARDING_RULE" --global; then
    run "${G[@]}" compute forwarding-rules delete "$FORWARDING_RULE" --global; fi
  if exists "${G[@]}" compute target-https-proxies describe "$PROXY" --global; then
    run "${G[@]}" compute target-https-proxies delete "$PROXY" --global; fi
  if exists "${G[@]}" network-security server-tls-policies describe "$TLS_POLICY" --location=global; then
    run "${G[@]}" network-security server-tls-policies delete "$TLS_POLICY" --location=global; fi
  if exists "${G[@]}" certificate-manager trust-configs describe "$TRUST_CONFIG" --location=global; then
    run "${G[@]}" certificate-manager trust-configs delete "$TRUST_CONFIG" --location=global; fi
  if exists "${G[@]}" compute url-maps describe "$URL_MAP" --global; then
    run "${G[@]}" compute url-maps delete "$URL_MAP" --global; fi
  if exists "${G[@]}" compute backend-services describe "$BACKEND" --global; then
    run "${G[@]}" compute backend-services delete "$BACKEND" --global; fi
  if exists "${G[@]}" compute network-endpoint-groups describe "$NEG_NAME" --region="$REGION"; then
    run "${G[@]}" compute network-endpoint-groups delete "$NEG_NAME" --region="$REGION"; fi
  if exists "${G[@]}" compute ssl-certificates describe "$CERT_NAME" --global; then
    run "${G[@]}" compute ssl-certificates delete "$CERT_NAME" --global; fi
  if exists "${G[@]}" compute addresses describe "$IP_NAME" --global; then
    run "${G[@]}" compute addresses delete "$IP_NAME" --global; fi
  if exists "${G[@]}" functions describe "$FUNCTION" --gen2 --region="$REGION"; then
    run "${G[@]}" functions delete "$FUNCTION" --gen2 --region="$REGION"; fi
  if exists "${G[@]}" iam workload-identity-pools providers describe "$PROVIDER_ID" \
      --workload-identity-pool="$POOL_ID" --location=global; then
    run "${G[@]}" iam workload-identity-pools providers delete "$PROVIDER_ID" \
      --workload-identity-pool="$POOL_ID" --location=global; fi
  if exists "${G[@]}" iam workload-identity-pools describe "$POOL_ID" --location=global; then
    run "${G[@]}" iam workload-identity-pools delete "$POOL_ID" --location=global; fi
  if exists "${G[@]}" iam service-accounts describe "$SA_EMAIL"; then
    run "${G[@]}" iam service-accounts delete "$SA_EMAIL"; fi
  say "Done. (Deleted pools and providers stay restorable for 30 days and keep their ids reserved.)"
}

if [[ $DESTROY == 1 ]]; then destroy; exit 0; fi

mkdir -p "$DEPLOY_DIR"

say "1. APIs, runtime service account, Token Creator on itself (for IAM signJwt)"
run "${G[@]}" services enable cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com iam.googleapis.com iamcredentials.googleapis.com sts.googleapis.com \
  cloudresourcemanager.googleapis.com compute.googleapis.com certificatemanager.googleapis.com \
  networksecurity.googleapis.com logging.googleapis.com
if ! exists "${G[@]}" iam service-accounts describe "$SA_EMAIL"; then
  run "${G[@]}" iam service-accounts create "$SA_NAME" --display-name="Token Service"
fi
run "${G[@]}" iam service-accounts add-iam-policy-binding "$SA_EMAIL" \
  --member="serviceAccount:$SA_EMAIL" --role=roles/iam.serviceAccountTokenCreator --condition=None
if [[ -z $PROJECT_NUMBER ]]; then
  PROJECT_NUMBER=$(value PROJECT_NUMBER "${G[@]}" projects describe "$PROJECT" --format='value(projectNumber)')
fi

say "2. Workload identity pool and OIDC provider trusting https://$FQDN"
if ! exists "${G[@]}" iam workload-identity-pools describe "$POOL_ID" --location=global; then
  run "${G[@]}" iam workload-identity-pools create "$POOL_ID" --location=global \
    --display-name="Token Service clients"
fi
if ! exists "${G[@]}" iam workload-identity-pools providers describe "$PROVIDER_ID" \
    --workload-identity-pool="$POOL_ID" --location=global; then
  run "${G[@]}" iam workload-identity-pools providers create-oidc "$PROVIDER_ID" --location=global \
    --workload-identity-pool="$POOL_ID" --issuer-uri="https://$FQDN" --attribute-mapping="$ATTRIBUTE_MAPPING"
fi

say "3. The function (2nd gen), reachable only through the load balancer"
# One worker process per vCPU (the GIL). The kernel does not balance connections between the
# workers, so each worker's pool of threads for waiting requests can hold the whole concurrency.
WORKERS=$((CPU > 0 ? CPU : 1))
THREADS=$CONCURRENCY
ENV_FILE=$DEPLOY_DIR/env.yaml
cat >"$ENV_FILE" <<EOF
TOKEN_ISSUER: "https://$FQDN"
WORKLOAD_IDENTITY_PROJECT_NUMBER: "$PROJECT_NUMBER"
WORKLOAD_IDENTITY_POOL_ID: "$POOL_ID"
WORKLOAD_IDENTITY_PROVIDER_ID: "$PROVIDER_ID"
TOKEN_SIGNER: "iam"
SIGNING_SERVICE_ACCOUNT: "$SA_EMAIL"
MTLS_HEADER_CLIENT_ID: "$CLIENT_ID_HEADER"
AUDIT_LOG_HANDLER: "cloud-logging"
GOOGLE_CLOUD_PROJECT: "$PROJECT"
WORKERS: "$WORKERS"
THREADS: "$THREADS"
EOF
# Redeploy only when the code or its settings changed, so a second run changes nothing.
SOURCE_HASH=$( (cd "$ROOT" && cat main.py requirements.txt token_service/*.py "$ENV_FILE" &&
  echo "$RUNTIME $CONCURRENCY $CPU $MIN_INSTANCES $MAX_INSTANCES") | sha256sum | cut -c1-40)
DEPLOYED_HASH=$(lookup "${G[@]}" functions describe "$FUNCTION" --gen2 --region="$REGION" \
  --format='value(labels.source_hash)')
if [[ $DEPLOYED_HASH == "$SOURCE_HASH" ]]; then
  echo "function $FUNCTION is up to date (source_hash $SOURCE_HASH)"
else
  # No Google identity arrives through the load balancer (clients prove themselves with mTLS), so
  # invocation is public; ingress internal-and-gclb keeps the run.app URL closed to the internet.
  run "${G[@]}" functions deploy "$FUNCTION" --gen2 --region="$REGION" --runtime="$RUNTIME" \
    --source="$ROOT" --entry-point=handle_request --trigger-http --allow-unauthenticated \
    --ingress-settings=internal-and-gclb --service-account="$SA_EMAIL" --env-vars-file="$ENV_FILE" \
    --cpu="$CPU" --memory=1Gi --concurrency="$CONCURRENCY" --timeout=60s \
    --min-instances="$MIN_INSTANCES" --max-instances="$MAX_INSTANCES" \
    --update-labels="source_hash=$SOURCE_HASH"
fi

say "4. Load balancer: address, certificate, serverless NEG, backend with mTLS headers, frontend"
if ! exists "${G[@]}" compute addresses describe "$IP_NAME" --global; then
  run "${G[@]}" compute addresses create "$IP_NAME" --global
fi
if ! exists "${G[@]}" compute ssl-certificates describe "$CERT_NAME" --global; then
  run "${G[@]}" compute ssl-certificates create "$CERT_NAME" --domains="$FQDN" --global
fi
if ! exists "${G[@]}" compute network-endpoint-groups describe "$NEG_NAME" --region="$REGION"; then
  run "${G[@]}" compute network-endpoint-groups create "$NEG_NAME" --region="$REGION" \
    --network-endpoint-type=serverless --cloud-function-name="$FUNCTION"
fi
if ! exists "${G[@]}" compute backend-services describe "$BACKEND" --global; then
  run "${G[@]}" compute backend-services create "$BACKEND" --global --load-balancing-scheme=EXTERNAL_MANAGED
fi
BACKENDS=$(lookup "${G[@]}" compute backend-services describe "$BACKEND" --global \
  --format='value(backends[].group)')
if [[ $BACKENDS != *"/networkEndpointGroups/$NEG_NAME"* ]]; then
  run "${G[@]}" compute backend-services add-backend "$BACKEND" --global \
    --network-endpoint-group="$NEG_NAME" --network-endpoint-group-region="$REGION"
fi
header_flags=()
for header in "${MTLS_HEADERS[@]}"; do header_flags+=("--custom-request-header=$header"); done
run "${G[@]}" compute backend-services update "$BACKEND" --global --enable-logging --logging-sample-rate=1 \
  "${header_flags[@]}"
if ! exists "${G[@]}" compute url-maps describe "$URL_MAP" --global; then
  run "${G[@]}" compute url-maps create "$URL_MAP" --default-service="$BACKEND" --global
fi
if ! exists "${G[@]}" compute target-https-proxies describe "$PROXY" --global; then
  run "${G[@]}" compute target-https-proxies create "$PROXY" --ssl-certificates="$CERT_NAME" \
    --url-map="$URL_MAP" --global
fi
if ! exists "${G[@]}" compute forwarding-rules describe "$FORWARDING_RULE" --global; then
  run "${G[@]}" compute forwarding-rules create "$FORWARDING_RULE" --global \
    --load-balancing-scheme=EXTERNAL_MANAGED --address="$IP_NAME" --target-https-proxy="$PROXY" --ports=443
fi

say "5. mTLS: trust config from your CA, ALLOW_INVALID_OR_MISSING_CLIENT_CERT policy, attached to the proxy"
TRUST_FILE=$DEPLOY_DIR/trust-config.yaml
{
  printf 'name: %s\ntrustStores:\n- trustAnchors:\n' "$TRUST_CONFIG"
  for file in "${CA_CERTS[@]}"; do printf '  - pemCertificate: "%s"\n' "$(pem_line "$file")"; done
  if [[ ${#INTERMEDIATE_CERTS[@]} -gt 0 ]]; then
    printf '  intermediateCas:\n'
    for file in "${INTERMEDIATE_CERTS[@]}"; do printf '  - pemCertificate: "%s"\n' "$(pem_line "$file")"; done
  fi
} >"$TRUST_FILE"
if ! exists "${G[@]}" certificate-manager trust-configs describe "$TRUST_CONFIG" --location=global; then
  run "${G[@]}" certificate-manager trust-configs import "$TRUST_CONFIG" --source="$TRUST_FILE" --location=global
fi
# ALLOW mode: Google's STS must fetch the discovery document without a client certificate; the
# function itself refuses a request unless the certificate was present and verified.
POLICY_FILE=$DEPLOY_DIR/server-tls-policy.yaml
cat >"$POLICY_FILE" <<EOF
name: $TLS_POLICY
mtlsPolicy:
  clientValidationMode: ALLOW_INVALID_OR_MISSING_CLIENT_CERT
  clientValidationTrustConfig: projects/$PROJECT/locations/global/trustConfigs/$TRUST_CONFIG
EOF
if ! exists "${G[@]}" network-security server-tls-policies describe "$TLS_POLICY" --location=global; then
  run "${G[@]}" network-security server-tls-policies import "$TLS_POLICY" --source="$POLICY_FILE" --location=global
fi
POLICY_URL=//networksecurity.googleapis.com/projects/$PROJECT/locations/global/serverTlsPolicies/$TLS_POLICY
ATTACHED=$(lookup "${G[@]}" compute target-https-proxies describe "$PROXY" --global \
  --format='value(serverTlsPolicy)')
if [[ $ATTACHED != *"/serverTlsPolicies/$TLS_POLICY" ]]; then
  run "${G[@]}" compute target-https-proxies update "$PROXY" --global --server-tls-policy="$POLICY_URL"
fi

if [[ $MONITORING == 1 ]]; then
  say "6. Log-based metrics and an alert on the refusal rate"
  # The audit line's labels are LogEntry labels; upstream_seconds is a jsonPayload field.
  AUDIT_FILTER="resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"$FUNCTION\" AND labels.event=\"token\""
  write_metric() {  # name, filter suffix, the rest of the LogMetric
    printf 'name: %s\ndescription: Token service audit lines (%s)\nfilter: %s\n%s\n' \
      "$1" "$1" "'$AUDIT_FILTER$2'" "$3" >"$DEPLOY_DIR/metric-$1.yaml"
  }
  write_metric token_service_tokens_issued ' AND labels.outcome="issued"' \
    'metricDescriptor: {metricKind: DELTA, valueType: INT64, unit: "1"}'
  write_metric token_service_refusals ' AND labels.outcome="refused"' \
    'labelExtractors: {reason: EXTRACT(labels.reason)}
metricDescriptor: {metricKind: DELTA, valueType: INT64, unit: "1", labels: [{key: reason, valueType: STRING}]}'
  write_metric token_service_upstream_latency ' AND jsonPayload.upstream_seconds>0' \
    'valueExtractor: EXTRACT(jsonPayload.upstream_seconds)
bucketOptions: {exponentialBuckets: {numFiniteBuckets: 32, growthFactor: 1.4, scale: 0.005}}
metricDescriptor: {metricKind: DELTA, valueType: DISTRIBUTION, unit: s}'
  for metric in token_service_tokens_issued token_service_refusals token_service_upstream_latency; do
    if ! exists "${G[@]}" logging metrics describe "$metric"; then
      run "${G[@]}" logging metrics create "$metric" --config-from-file="$DEPLOY_DIR/metric-$metric.yaml"
    fi
  done
  ALERT_FILE=$DEPLOY_DIR/alert-refusals.yaml
  cat >"$ALERT_FILE" <<EOF
displayName: "$FUNCTION refusal rate"
combiner: OR
conditions:
- displayName: "more than $ALERT_THRESHOLD refusals per minute for 5 minutes"
  conditionThreshold:
    filter: 'metric.type="logging.googleapis.com/user/token_service_refusals" AND resource.type="cloud_run_revision"'
    aggregations: [{alignmentPeriod: 60s, perSeriesAligner: ALIGN_RATE, crossSeriesReducer: REDUCE_SUM}]
    comparison: COMPARISON_GT
    thresholdValue: $(awk "BEGIN {print $ALERT_THRESHOLD / 60}")
    duration: 300s
documentation:
  content: "Refusals by reason: the README's Troubleshooting table; in Logs Explorer: labels.outcome=\"refused\""
EOF
  if [[ -n $NOTIFICATION_CHANNEL ]]; then
    printf 'notificationChannels: ["%s"]\n' "$NOTIFICATION_CHANNEL" >>"$ALERT_FILE"
  fi
  EXISTING_ALERT=$(lookup "${G[@]}" alpha monitoring policies list \
    --filter="displayName=\"$FUNCTION refusal rate\"" --format='value(name)')
  if [[ -z $EXISTING_ALERT ]]; then
    run "${G[@]}" alpha monitoring policies create --policy-from-file="$ALERT_FILE"
  fi
fi

say "7. What is left for you"
ADDRESS=$(value IP_ADDRESS "${G[@]}" compute addresses describe "$IP_NAME" --global --format='value(address)')
cat <<EOF

Create this DNS record (the Google-managed certificate is issued once it resolves; allow up to an hour):
  $FQDN.  300  IN  A  $ADDRESS

Test it (load balancer changes can take up to an hour to take effect):
  curl -s https://$FQDN/.well-known/openid-configuration
  curl -s https://$FQDN/token --cert client.pem --key client-key.pem -d grant_type=client_credentials

Clients authenticate as this principal; grant it roles, or roles/iam.workloadIdentityUser on a service account:
  principal://iam.googleapis.com/projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL_ID/subject/CLIENT_ID
  (CLIENT_ID: the value of the $CLIENT_ID_HEADER header, the certificate's base64 SHA-256 fingerprint by default)

Client libraries, gcloud and Terraform:
  gcloud iam workload-identity-pools create-cred-config \\
    projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL_ID/providers/$PROVIDER_ID \\
    --service-account=SERVICE_ACCOUNT_EMAIL --output-file=token-service.json \\
    --executable-command='curl --silent https://$FQDN/token --data format=external_credential --data grant_type=client_credentials --cert /path/client.pem --key /path/client-key.pem'
  export GOOGLE_APPLICATION_CREDENTIALS=\$PWD/token-service.json GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1
EOF
