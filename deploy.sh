#!/usr/bin/env bash
# deploy.sh: from an empty Google Cloud project to a working mTLS token service, and back.
#
# Cloud Function (2nd gen) behind a global external Application Load Balancer with frontend
# mTLS, reached through a Cloud Run-type serverless NEG. Every resource is read before it is
# written, so a second run with the same inputs changes nothing, and a run with new inputs
# converges what depends on them. The load balancer never serves without its mTLS and SSL
# policies: both exist before the proxy, which is created with them. See README "Deployment".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<'EOF'
Usage: ./deploy.sh --project PROJECT_ID --fqdn token.example.com --ca-cert ca.pem [options]
       ./deploy.sh --project PROJECT_ID --destroy [--yes]
       ./deploy.sh --fqdn token.example.com --verify [--verify-url URL --verify-cacert FILE]

Required (flags or environment variables):
  --project ID              Google Cloud project id                          (PROJECT)
  --fqdn NAME               public DNS name of the load balancer; the issuer  (FQDN)
                            is https://NAME
  --ca-cert FILE            PEM root CA(s) trusted for client certificates; repeatable; a file
                            may hold several certificates
Options:
  --intermediate-cert FILE  PEM intermediate CA(s); repeatable
  --region REGION           function and NEG region (REGION, default us-central1)
  --pool ID                 workload identity pool id (POOL_ID, default token-service)
  --provider ID             provider id (PROVIDER_ID, default token-service)
  --function NAME           function name, 6-24 characters; also names the service accounts and the
                            load balancer's resources (FUNCTION_NAME, default token-service)
  --client-id-header NAME   MTLS_HEADER_CLIENT_ID (default X-Client-Cert-Hash)
  --policy FILE             client policy (POLICY_FILE), deployed with the function
  --auth-flows LIST         AUTH_FLOWS (default xlb-mtls-client-credentials)
  --runtime RUNTIME         Python runtime (default python313)
  --cpu N                   vCPUs per instance: 1, 2, 4, 6 or 8 (default 2); one worker per vCPU
  --memory SIZE             memory per instance (default: 1Gi up to 2 vCPU, 2Gi for 4, 4Gi for 6-8)
  --concurrency N           requests per instance, 1-1000 (default 256); THREADS = concurrency
  --min-instances N         (default 0)      --max-instances N   (default 20)
  --invoker MODE            all-users (default: roles/run.invoker for allUsers) or no-iam-check
                            (Cloud Run's invoker check off; for org policies that forbid allUsers)
  --with-monitoring         also create log-based metrics and an alert policy on the refusal rate
  --alert-refusals-per-minute N   the alert threshold (default 10)
  --notification-channel ID       where the alert goes (projects/P/notificationChannels/N; optional)
  --rotate-proxy-secret     start a rotation of the load balancer's secret header: the function
                            accepts the new and the old value, the load balancer sends the new one
  --finish-proxy-secret-rotation  after the load balancer has switched: accept only the new value
  --redis                   also create a Memorystore for Redis instance (the jti replay cache and the
                            client-secret rate limits, shared by all instances) and the Serverless VPC
                            Access connector the function reaches it through; sets REDIS_URL; needs
                            --auth-flows with jwt-bearer or client-secret
  --redis-tier TIER         standard (default: a replica with automatic failover) or basic (cheaper;
                            a restart forgets the spent jtis, so a replay may pass once)
  --redis-size-gb N         the instance's memory, 1-300 (default 1)
  --network NAME            the VPC network of the instance and the connector (default: default)
  --vpc-connector-range CIDR  an unused internal /28 for the connector (default 10.8.0.0/28)
  --output text|json        the summary at the end (json: machine-readable, on stdout)
  --dry-run                 print every command a real run would issue, run none
  --destroy                 delete everything this script creates, in reverse order, after asking
  --yes                     do not ask before --destroy
  --verify                  check a deployed stack from outside: discovery and JWKS without a client
                            certificate, a token request without one refused
  --verify-url URL          where --verify connects (default https://FQDN)
  --verify-cacert FILE      CA bundle curl trusts for --verify
  -h, --help
EOF
}

fail() { printf 'deploy.sh: %s\n' "$*" >&2; exit 2; }

PROJECT=${PROJECT:-}
FQDN=${FQDN:-}
REGION=${REGION:-us-central1}
POOL_ID=${POOL_ID:-token-service}
PROVIDER_ID=${PROVIDER_ID:-token-service}
FUNCTION=${FUNCTION_NAME:-token-service}
CLIENT_ID_HEADER=${CLIENT_ID_HEADER:-X-Client-Cert-Hash}
POLICY=${POLICY:-}
AUTH_FLOWS=${AUTH_FLOWS:-xlb-mtls-client-credentials}
RUNTIME=${RUNTIME:-python313}
CONCURRENCY=${CONCURRENCY:-256}
CPU=${CPU:-2}
MEMORY=${MEMORY:-}
MIN_INSTANCES=${MIN_INSTANCES:-0}
MAX_INSTANCES=${MAX_INSTANCES:-20}
INVOKER=${INVOKER:-all-users}
DEPLOY_DIR=${DEPLOY_DIR:-$ROOT/.deploy}
OUTPUT=text
CA_CERTS=()
INTERMEDIATE_CERTS=()
DRY_RUN=0
DESTROY=0
VERIFY=0
VERIFY_URL=
VERIFY_CACERT=
MONITORING=0
ROTATION=
ALERT_THRESHOLD=${ALERT_THRESHOLD:-10}
NOTIFICATION_CHANNEL=${NOTIFICATION_CHANNEL:-}
YES=0
REDIS=0
REDIS_TIER=${REDIS_TIER:-standard}
REDIS_SIZE_GB=${REDIS_SIZE_GB:-1}
NETWORK=${NETWORK:-default}
VPC_CONNECTOR_RANGE=${VPC_CONNECTOR_RANGE:-10.8.0.0/28}

while [[ $# -gt 0 ]]; do
  case $1 in
    --project) PROJECT=${2:-}; shift 2 ;;
    --fqdn) FQDN=${2:-}; shift 2 ;;
    --ca-cert) CA_CERTS+=("${2:-}"); shift 2 ;;
    --intermediate-cert) INTERMEDIATE_CERTS+=("${2:-}"); shift 2 ;;
    --region) REGION=${2:-}; shift 2 ;;
    --pool) POOL_ID=${2:-}; shift 2 ;;
    --provider) PROVIDER_ID=${2:-}; shift 2 ;;
    --function) FUNCTION=${2:-}; shift 2 ;;
    --client-id-header) CLIENT_ID_HEADER=${2:-}; shift 2 ;;
    --policy) POLICY=${2:-}; shift 2 ;;
    --auth-flows) AUTH_FLOWS=${2:-}; shift 2 ;;
    --runtime) RUNTIME=${2:-}; shift 2 ;;
    --concurrency) CONCURRENCY=${2:-}; shift 2 ;;
    --cpu) CPU=${2:-}; shift 2 ;;
    --memory) MEMORY=${2:-}; shift 2 ;;
    --min-instances) MIN_INSTANCES=${2:-}; shift 2 ;;
    --max-instances) MAX_INSTANCES=${2:-}; shift 2 ;;
    --invoker) INVOKER=${2:-}; shift 2 ;;
    --with-monitoring) MONITORING=1; shift ;;
    --alert-refusals-per-minute) ALERT_THRESHOLD=${2:-}; shift 2 ;;
    --notification-channel) NOTIFICATION_CHANNEL=${2:-}; shift 2 ;;
    --rotate-proxy-secret) ROTATION=start; shift ;;
    --finish-proxy-secret-rotation) ROTATION=finish; shift ;;
    --redis) REDIS=1; shift ;;
    --redis-tier) REDIS_TIER=${2:-}; shift 2 ;;
    --redis-size-gb) REDIS_SIZE_GB=${2:-}; shift 2 ;;
    --network) NETWORK=${2:-}; shift 2 ;;
    --vpc-connector-range) VPC_CONNECTOR_RANGE=${2:-}; shift 2 ;;
    --output) OUTPUT=${2:-}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --destroy) DESTROY=1; shift ;;
    --yes) YES=1; shift ;;
    --verify) VERIFY=1; shift ;;
    --verify-url) VERIFY_URL=${2:-}; shift 2 ;;
    --verify-cacert) VERIFY_CACERT=${2:-}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done

# shellcheck source=deploy/common.sh
source "$ROOT/deploy/common.sh"
# shellcheck source=deploy/inputs.sh
source "$ROOT/deploy/inputs.sh"
# shellcheck source=deploy/identity.sh
source "$ROOT/deploy/identity.sh"
# shellcheck source=deploy/redis.sh
source "$ROOT/deploy/redis.sh"
# shellcheck source=deploy/function.sh
source "$ROOT/deploy/function.sh"
# shellcheck source=deploy/load_balancer.sh
source "$ROOT/deploy/load_balancer.sh"
# shellcheck source=deploy/monitoring.sh
source "$ROOT/deploy/monitoring.sh"
# shellcheck source=deploy/destroy.sh
source "$ROOT/deploy/destroy.sh"
# shellcheck source=deploy/verify.sh
source "$ROOT/deploy/verify.sh"

if [[ $VERIFY == 1 ]]; then verify_stack; exit; fi
validate_inputs
name_resources
if [[ $DESTROY == 1 ]]; then destroy_stack; exit 0; fi

mkdir -p "$DEPLOY_DIR"
setup_identities
setup_workload_identity
setup_proxy_secret
[[ $REDIS == 0 ]] || setup_redis
deploy_function
setup_mtls_policies
setup_backend
setup_frontend
[[ $MONITORING == 0 ]] || setup_monitoring
say "9. What is left for you"
print_summary
