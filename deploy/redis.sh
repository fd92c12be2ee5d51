# shellcheck shell=bash
# --redis: a Memorystore for Redis instance for the jti replay cache and the client-secret rate
# limits, shared by every instance of the function, and the Serverless VPC Access connector
# through which the function reaches its private address. Neither is ever changed in a way
# that loses data: a tier or network that differs from the existing instance stops the run.

# The APIs are enabled with the others (identity.sh) only when they are used.
[[ ${REDIS:-0} == 0 ]] || APIS+=(redis.googleapis.com vpcaccess.googleapis.com)

validate_redis_inputs() {  # appends to the caller's problems array
  # Only these flows keep state in Redis, and the function refuses a REDIS_URL that nothing uses.
  [[ $DESTROY == 1 || ,${AUTH_FLOWS// /}, =~ ,(jwt-bearer|client-secret), ]] ||
    problems+=("--redis holds the jwt-bearer replay cache and the client-secret limits: --auth-flows must enable jwt-bearer or client-secret")
  [[ $REDIS_TIER =~ ^(basic|standard)$ ]] || problems+=("--redis-tier must be basic or standard")
  if [[ ! $REDIS_SIZE_GB =~ ^[0-9]+$ ]] || (( REDIS_SIZE_GB < 1 || REDIS_SIZE_GB > 300 )); then
    problems+=("--redis-size-gb must be a whole number of GB from 1 to 300 (Memorystore's range)")
  fi
  [[ $NETWORK =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || problems+=("--network '$NETWORK' is not a VPC network name")
  local octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])' ip last
  if [[ ! $VPC_CONNECTOR_RANGE =~ ^($octet\.){3}$octet/28$ ]]; then
    problems+=("--vpc-connector-range '$VPC_CONNECTOR_RANGE' must be a /28 range such as 10.8.0.0/28 (Serverless VPC Access needs exactly 16 addresses)")
  else
    ip=${VPC_CONNECTOR_RANGE%/28}
    last=${ip##*.}
    (( last % 16 == 0 )) || problems+=("--vpc-connector-range '$VPC_CONNECTOR_RANGE' does not start on a /28 boundary")
    [[ $ip =~ ^(10\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.) ]] ||
      problems+=("--vpc-connector-range '$VPC_CONNECTOR_RANGE' must be an internal (RFC 1918) range")
  fi
}

name_redis_resources() {
  REDIS_INSTANCE=$FUNCTION-redis
  # Connector ids are at most 25 characters (^[a-z][-a-z0-9]{0,23}[a-z0-9]$); function names up to 24.
  VPC_CONNECTOR=${FUNCTION:0:21}-vpc
  VPC_CONNECTOR_NAME=projects/$PROJECT/locations/$REGION/connectors/$VPC_CONNECTOR
  REDIS_TIER_API=$([[ $REDIS_TIER == standard ]] && echo STANDARD_HA || echo BASIC)
  REDIS_URL_SECRET=$FUNCTION-redis-url
}

# The function's REDIS_URL holds the instance's AUTH string, so it reaches the function as a
# Secret Manager version (REDIS_URL_SECRET:REDIS_URL_VERSION), never as a plain variable.
REDIS_URL_VERSION=

setup_redis() {
  say "4a. Memorystore for Redis ($REDIS_TIER, $REDIS_SIZE_GB GB) and the VPC connector the function reaches it through"
  local networks connector instance tier size network auth host port state
  networks=$(read_state "${G[@]}" compute networks list --format='value(name)') || exit 3
  if [[ $DRY_RUN == 0 ]] && ! grep -qxF "$NETWORK" <<<"$networks"; then
    fail "VPC network '$NETWORK' does not exist in project $PROJECT: create it, or pass --network with one that does"
  fi
  connector=$(read_state "${G[@]}" compute networks vpc-access connectors list --region="$REGION" \
    --filter="name~/connectors/$VPC_CONNECTOR\$" --format='value(network.basename(),ipCidrRange)') || exit 3
  if [[ -z $connector ]]; then
    run "${G[@]}" compute networks vpc-access connectors create "$VPC_CONNECTOR" --region="$REGION" \
      --network="$NETWORK" --range="$VPC_CONNECTOR_RANGE" --min-instances=2 --max-instances=3
  elif [[ $connector != "$NETWORK	$VPC_CONNECTOR_RANGE" ]]; then
    fail "connector $VPC_CONNECTOR exists with network and range '${connector//	/ }'; connectors cannot change: pass the same --network and --vpc-connector-range, or delete it"
  fi
  instance=$(read_state "${G[@]}" redis instances list --region="$REGION" \
    --filter="name~/instances/$REDIS_INSTANCE\$" \
    --format='value(tier,memorySizeGb,authorizedNetwork.basename(),authEnabled)') || exit 3
  if [[ -z $instance ]]; then
    run "${G[@]}" redis instances create "$REDIS_INSTANCE" --region="$REGION" --tier="$REDIS_TIER" \
      --size="$REDIS_SIZE_GB" --network="$NETWORK" --connect-mode=direct-peering --enable-auth
  else
    read -r tier size network auth <<<"$instance"
    [[ $tier == "$REDIS_TIER_API" && $network == "$NETWORK" ]] ||
      fail "Redis instance $REDIS_INSTANCE is $tier on network $network; Memorystore cannot change either: pass --redis-tier/--network to match, or delete it (./deploy.sh --destroy)"
    [[ $size == "$REDIS_SIZE_GB" ]] ||
      run "${G[@]}" redis instances update "$REDIS_INSTANCE" --region="$REGION" --size="$REDIS_SIZE_GB"
    [[ $auth == True ]] || run "${G[@]}" redis instances update "$REDIS_INSTANCE" --region="$REGION" --enable-auth
  fi
  instance=$(read_state "${G[@]}" redis instances describe "$REDIS_INSTANCE" --region="$REGION" \
    --format='value(host,port,state)') || exit 3
  read -r host port state <<<"$instance"
  if [[ $DRY_RUN == 1 ]]; then host=REDIS_HOST port=6379; fi
  [[ $DRY_RUN == 1 || ($state == READY && -n $host && -n $port) ]] ||
    fail "Redis instance $REDIS_INSTANCE is $state without an address yet; run deploy.sh again when it is READY"
  auth=$(read_state "${G[@]}" redis instances get-auth-string "$REDIS_INSTANCE" --region="$REGION" \
    --format='value(authString)') || exit 3
  if [[ $DRY_RUN == 1 ]]; then auth=REDIS_AUTH_STRING; fi
  SECRET_VALUES+=("$auth")
  store_redis_url "redis://:$auth@$host:$port/0"
  printf 'REDIS_URL=redis://:***@%s:%s/0 (Secret Manager %s, version %s)\n' "$host" "$port" "$REDIS_URL_SECRET" \
    "$REDIS_URL_VERSION" >&3
}

# store_redis_url URL: the secret's newest version holds URL (a new version only when it changed),
# and the runtime account may read it.
store_redis_url() {
  local url=$1 current versions
  if ! present "$REDIS_URL_SECRET" "${G[@]}" secrets list; then
    run "${G[@]}" secrets create "$REDIS_URL_SECRET" --replication-policy=automatic --data-file=- < <(printf %s "$url")
  elif [[ $DRY_RUN == 0 ]]; then
    current=$(read_state "${G[@]}" secrets versions access latest --secret="$REDIS_URL_SECRET") || exit 3
    [[ $current == "$url" ]] ||
      run "${G[@]}" secrets versions add "$REDIS_URL_SECRET" --data-file=- < <(printf %s "$url")
  fi
  change_bindings add "serviceAccount:$SA_EMAIL" roles/secretmanager.secretAccessor secrets "$REDIS_URL_SECRET"
  versions=$(read_state "${G[@]}" secrets versions list "$REDIS_URL_SECRET" --filter=state:ENABLED \
    --format='value(name.basename())') || exit 3
  REDIS_URL_VERSION=$(sort -n <<<"$versions" | tail -n1)
  [[ -n $REDIS_URL_VERSION ]] || REDIS_URL_VERSION=1  # --dry-run: the version create makes
}

# The function's --set-secrets value: the proxy secret, and with --redis the REDIS_URL secret.
function_secrets() {
  printf 'PROXY_SECRETS=%s:%s' "$PROXY_SECRET" "$PROXY_SECRET_VERSION"
  [[ $REDIS == 0 ]] || printf ',REDIS_URL=%s:%s' "$REDIS_URL_SECRET" "$REDIS_URL_VERSION"
}

# The function's flags for its VPC egress: only private ranges (Redis) go through the connector,
# Google's APIs stay on the direct path. Without --redis, a connector left from before is cleared.
vpc_flags() {  # CURRENT_CONNECTOR
  if [[ $REDIS == 1 ]]; then
    printf '%s\n' "--vpc-connector=$VPC_CONNECTOR_NAME" --egress-settings=private-ranges-only
  elif [[ -n $1 ]]; then
    printf '%s\n' --clear-vpc-connector
  fi
}

destroy_redis() {
  local enabled
  enabled=$(read_state "${G[@]}" services list --enabled --format='value(config.name)') || exit 3
  # A project that never enabled the APIs holds neither resource (and would refuse the reads).
  if [[ $DRY_RUN == 1 && $REDIS == 1 ]] || grep -qxF redis.googleapis.com <<<"$enabled"; then
    delete_if_present "$REDIS_INSTANCE" "redis instances list --region=$REGION" \
      "redis instances delete $REDIS_INSTANCE --region=$REGION"
  fi
  [[ $DRY_RUN == 1 && $REDIS == 0 ]] ||
    delete_if_present "$REDIS_URL_SECRET" "secrets list" "secrets delete $REDIS_URL_SECRET"
  if [[ $DRY_RUN == 1 && $REDIS == 1 ]] || grep -qxF vpcaccess.googleapis.com <<<"$enabled"; then
    delete_if_present "$VPC_CONNECTOR" "compute networks vpc-access connectors list --region=$REGION" \
      "compute networks vpc-access connectors delete $VPC_CONNECTOR --region=$REGION"
  fi
}
