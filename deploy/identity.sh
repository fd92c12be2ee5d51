# shellcheck shell=bash
# APIs, service accounts, least-privilege roles, the workload identity pool and provider, and
# the secret the load balancer sends to prove a request came through it.

APIS=(cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com
  iam.googleapis.com iamcredentials.googleapis.com sts.googleapis.com cloudresourcemanager.googleapis.com
  compute.googleapis.com certificatemanager.googleapis.com networksecurity.googleapis.com
  secretmanager.googleapis.com logging.googleapis.com monitoring.googleapis.com)
ATTRIBUTE_MAPPING="google.subject=assertion.client_id,attribute.client_x5_spiffe=assertion.client.x5_spiffe,\
attribute.client_x5_dnssan=assertion.client.x5_dnssan,attribute.client_x5_urisan=assertion.client.x5_urisan,\
attribute.client_x5_sha256=assertion.client.x5_sha256,attribute.client_x5_serial=assertion.client.x5_serial"

enable_apis() {
  local enabled missing=() api
  enabled=$(read_state "${G[@]}" services list --enabled --format='value(config.name)') || exit 3
  for api in "${APIS[@]}"; do grep -qxF "$api" <<<"$enabled" || missing+=("$api"); done
  [[ ${#missing[@]} -eq 0 ]] || run "${G[@]}" services enable "${missing[@]}"
}

# granted GROUP RESOURCE [FLAG...]: "ROLE<tab>MEMBER" lines of the resource's IAM policy
# (GROUP: "projects", "iam service-accounts", "secrets" or "run services").
granted() {
  local -a words
  read -ra words <<<"$1"
  read_state "${G[@]}" "${words[@]}" get-iam-policy "$2" "${@:3}" --flatten='bindings[].members' \
    --format='value(bindings.role,bindings.members)'
}

# change_bindings add|remove MEMBER "ROLE..." GROUP RESOURCE [FLAG...]: add the roles MEMBER
# lacks, or remove those it holds; one read of the policy, no write when nothing changes.
change_bindings() {
  local change=$1 member=$2 roles=$3 group=$4 resource=$5 policy role
  shift 5
  local -a words condition=()
  read -ra words <<<"$group"
  # Conditional bindings elsewhere in a policy make gcloud ask which one is meant; we mean none.
  [[ $group != projects && $group != "iam service-accounts" ]] || condition=(--condition=None)
  policy=$(granted "$group" "$resource" "$@") || exit 3
  for role in $roles; do
    if grep -qxF -- "$role	$member" <<<"$policy"; then
      [[ $change == add ]] ||
        run "${G[@]}" "${words[@]}" remove-iam-policy-binding "$resource" "$@" --member="$member" --role="$role" \
          "${condition[@]}"
    elif [[ $change == add || $DRY_RUN == 1 ]]; then
      run "${G[@]}" "${words[@]}" "$change-iam-policy-binding" "$resource" "$@" --member="$member" --role="$role" \
        "${condition[@]}"
    fi
  done
}

ensure_service_account() {  # ACCOUNT_ID DISPLAY_NAME
  present "$1@$PROJECT.iam.gserviceaccount.com" "${G[@]}" iam service-accounts list --filter="email:$1@" ||
    run "${G[@]}" iam service-accounts create "$1" --display-name="$2"
}

# The runtime account signs ID tokens with IAM signJwt on itself, and nothing else: a custom
# role with that one permission (Token Creator would also grant getAccessToken and signBlob).
ensure_signer_role() {
  local roles state permissions
  roles=$(read_state "${G[@]}" iam roles list --show-deleted --format='value(name.basename(),deleted)') || exit 3
  state=$(awk -v id="$SIGNER_ROLE_ID" '$1 == id {print ($2 == "True" ? "deleted" : "active")}' <<<"$roles")
  case $state in
    deleted) run "${G[@]}" iam roles undelete "$SIGNER_ROLE_ID" ;;
    active) ;;
    *) run "${G[@]}" iam roles create "$SIGNER_ROLE_ID" --title="$FUNCTION signs ID tokens" \
         --description="iam.serviceAccounts.signJwt only (token service)" \
         --permissions=iam.serviceAccounts.signJwt --stage=GA
       return ;;
  esac
  permissions=$(read_state "${G[@]}" iam roles describe "$SIGNER_ROLE_ID" --format='value(includedPermissions)') || exit 3
  [[ $DRY_RUN == 1 || $permissions == iam.serviceAccounts.signJwt ]] ||
    run "${G[@]}" iam roles update "$SIGNER_ROLE_ID" --permissions=iam.serviceAccounts.signJwt
}

setup_identities() {
  say "1. APIs, the runtime and build service accounts, least-privilege roles"
  enable_apis
  ensure_service_account "$FUNCTION" "Token Service (runtime)"
  ensure_service_account "$FUNCTION-build" "Token Service (build)"
  ensure_signer_role
  change_bindings add "serviceAccount:$SA_EMAIL" "$SIGNER_ROLE" "iam service-accounts" "$SA_EMAIL"
  # Earlier versions of this script granted Token Creator; signJwt alone is enough.
  [[ $DRY_RUN == 1 ]] || change_bindings remove "serviceAccount:$SA_EMAIL" roles/iam.serviceAccountTokenCreator \
    "iam service-accounts" "$SA_EMAIL"
  change_bindings add "serviceAccount:$BUILD_SA_EMAIL" "${BUILD_ROLES[*]}" projects "$PROJECT"
  PROJECT_NUMBER=$(read_state "${G[@]}" projects describe "$PROJECT" --format='value(projectNumber)') || exit 3
  [[ -n $PROJECT_NUMBER ]] || PROJECT_NUMBER=PROJECT_NUMBER  # --dry-run
}

# state_of NAME LIST-CMD...: ACTIVE, DELETED (soft-deleted, restorable for 30 days) or empty.
state_of() {
  local name=$1 listed
  shift
  listed=$(read_state "$@" --show-deleted --format='value(name.basename(),state)') || exit 3
  awk -v name="$name" '$1 == name {print $2}' <<<"$listed"
}

setup_workload_identity() {
  say "2. Workload identity pool and OIDC provider trusting https://$FQDN"
  local pool_flags=(--location=global) provider_flags=(--workload-identity-pool="$POOL_ID" --location=global)
  local mapping_digest current
  case $(state_of "$POOL_ID" "${G[@]}" iam workload-identity-pools list "${pool_flags[@]}") in
    DELETED) run "${G[@]}" iam workload-identity-pools undelete "$POOL_ID" "${pool_flags[@]}" ;;
    ACTIVE) ;;
    *) run "${G[@]}" iam workload-identity-pools create "$POOL_ID" "${pool_flags[@]}" \
         --display-name="Token Service clients" ;;
  esac
  mapping_digest=$(digest <<<"$ATTRIBUTE_MAPPING")
  case $(state_of "$PROVIDER_ID" "${G[@]}" iam workload-identity-pools providers list "${provider_flags[@]}") in
    DELETED) run "${G[@]}" iam workload-identity-pools providers undelete "$PROVIDER_ID" "${provider_flags[@]}" ;;
    ACTIVE) ;;
    *) run "${G[@]}" iam workload-identity-pools providers create-oidc "$PROVIDER_ID" "${provider_flags[@]}" \
         --issuer-uri="https://$FQDN" --attribute-mapping="$ATTRIBUTE_MAPPING" \
         --description="token service; mapping $mapping_digest"
       return ;;
  esac
  current=$(read_state "${G[@]}" iam workload-identity-pools providers describe "$PROVIDER_ID" "${provider_flags[@]}" \
    --format='value(oidc.issuerUri,description)') || exit 3
  [[ $DRY_RUN == 1 || $current == "https://$FQDN	token service; mapping $mapping_digest" ]] ||
    run "${G[@]}" iam workload-identity-pools providers update-oidc "$PROVIDER_ID" "${provider_flags[@]}" \
      --issuer-uri="https://$FQDN" --attribute-mapping="$ATTRIBUTE_MAPPING" \
      --description="token service; mapping $mapping_digest"
}

# The proxy secret: the load balancer sends its first line in $PROXY_SECRET_HEADER; the function
# accepts every line of the version it mounts (two during a rotation).
setup_proxy_secret() {
  say "3. The load balancer's secret header (Secret Manager $PROXY_SECRET)"
  local lines current fresh versions version
  if ! present "$PROXY_SECRET" "${G[@]}" secrets list; then
    fresh=$(openssl rand -hex 32)
    SECRET_VALUES+=("$fresh")
    run "${G[@]}" secrets create "$PROXY_SECRET" --replication-policy=automatic --data-file=- <<<"$fresh"
  fi
  change_bindings add "serviceAccount:$SA_EMAIL" roles/secretmanager.secretAccessor secrets "$PROXY_SECRET"
  newest_proxy_secret_version
  if [[ -n $ROTATION && $DRY_RUN == 0 ]]; then
    lines=$(read_state "${G[@]}" secrets versions access "$PROXY_SECRET_VERSION" --secret="$PROXY_SECRET") || exit 3
    current=$(head -n1 <<<"$lines")
    SECRET_VALUES+=("$current")
    if [[ $ROTATION == start ]]; then
      fresh=$(openssl rand -hex 32)
      SECRET_VALUES+=("$fresh")
      run "${G[@]}" secrets versions add "$PROXY_SECRET" --data-file=- <<<"$fresh"$'\n'"$current"
    else
      run "${G[@]}" secrets versions add "$PROXY_SECRET" --data-file=- <<<"$current"
    fi
    versions=$(read_state "${G[@]}" secrets versions list "$PROXY_SECRET" --filter=state:ENABLED \
      --format='value(name.basename())') || exit 3
    newest_proxy_secret_version
    if [[ $ROTATION == finish ]]; then
      for version in $versions; do
        [[ $version == "$PROXY_SECRET_VERSION" ]] ||
          run "${G[@]}" secrets versions disable "$version" --secret="$PROXY_SECRET"
      done
    fi
  fi
  if [[ $DRY_RUN == 1 ]]; then
    PROXY_SECRET_VALUE=PROXY_SECRET_VALUE
  else
    lines=$(read_state "${G[@]}" secrets versions access "$PROXY_SECRET_VERSION" --secret="$PROXY_SECRET") || exit 3
    PROXY_SECRET_VALUE=$(head -n1 <<<"$lines")
    SECRET_VALUES+=("$PROXY_SECRET_VALUE")
  fi
}

newest_proxy_secret_version() {
  local versions
  versions=$(read_state "${G[@]}" secrets versions list "$PROXY_SECRET" --filter=state:ENABLED \
    --format='value(name.basename())') || exit 3
  PROXY_SECRET_VERSION=$(sort -n <<<"$versions" | tail -n1)
  [[ -n $PROXY_SECRET_VERSION ]] || PROXY_SECRET_VERSION=1  # --dry-run: the version create makes
}
