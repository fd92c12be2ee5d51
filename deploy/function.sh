# shellcheck shell=bash
# The function: exactly the files it runs, its settings, and who may invoke it.

stage_source() {
  STAGE=$DEPLOY_DIR/source
  rm -rf "$STAGE"
  mkdir -p "$STAGE"
  cp "$ROOT/main.py" "$ROOT/requirements.txt" "$STAGE/"
  # The package's modules only: its folders, none of their caches.
  (cd "$ROOT" && find token_service -name '*.py' -print0 | xargs -0 cp --parents -t "$STAGE")
  printf '__pycache__\n*.pyc\n' >"$STAGE/.gcloudignore"
  [[ -z $POLICY ]] || cp "$POLICY" "$STAGE/policy.yaml"
}

write_environment() {
  # One worker process per vCPU (the GIL). The kernel does not balance connections between the
  # workers, so each worker's pool of threads for waiting requests can hold the whole concurrency.
  ENV_FILE=$DEPLOY_DIR/env.yaml
  cat >"$ENV_FILE" <<EOT
TOKEN_ISSUER: "https://$FQDN"
WORKLOAD_IDENTITY_PROJECT_NUMBER: "$PROJECT_NUMBER"
WORKLOAD_IDENTITY_POOL_ID: "$POOL_ID"
WORKLOAD_IDENTITY_PROVIDER_ID: "$PROVIDER_ID"
TOKEN_SIGNER: "iam"
SIGNING_SERVICE_ACCOUNT: "$SA_EMAIL"
MTLS_HEADER_CLIENT_ID: "$CLIENT_ID_HEADER"
PROXY_SECRET_HEADER: "$PROXY_SECRET_HEADER"
AUTH_FLOWS: "$AUTH_FLOWS"
AUDIT_LOG_HANDLER: "cloud-logging"
GOOGLE_CLOUD_PROJECT: "$PROJECT"
WORKERS: "$CPU"
THREADS: "$CONCURRENCY"
EOT
  [[ -z $POLICY ]] || printf 'POLICY_FILE: "policy.yaml"\n' >>"$ENV_FILE"
}

deploy_function() {
  say "4. The function (2nd gen), reachable only through the load balancer"
  stage_source
  write_environment
  local settings expected deployed state hash revision connector vpc=()
  settings="$RUNTIME $CPU $MEMORY $CONCURRENCY $MIN_INSTANCES $MAX_INSTANCES $BUILD_SA_EMAIL $(function_secrets)"
  [[ $REDIS == 0 ]] || settings+=" $VPC_CONNECTOR_NAME private-ranges-only"
  expected=$( (cd "$STAGE" && find . -type f | LC_ALL=C sort | xargs cat; cat "$ENV_FILE"; echo "$settings") | digest)
  # Up to date only when it is ACTIVE, built from these inputs, and serving a revision: a deploy
  # that failed half-way is redeployed, whatever its labels say.
  deployed=$(read_state "${G[@]}" functions list --regions="$REGION" --filter="name~/functions/$FUNCTION\$" \
    --format='value[separator="|"](state,labels.deploy_hash,serviceConfig.revision,serviceConfig.vpcConnector)') ||
    exit 3
  IFS='|' read -r state hash revision connector <<<"$deployed"
  mapfile -t vpc < <(vpc_flags "$connector")
  if [[ $state == ACTIVE && $hash == "$expected" && -n $revision && ($REDIS == 1 || -z $connector) ]]; then
    printf 'function %s is up to date (deploy_hash %s)\n' "$FUNCTION" "$expected" >&3
  else
    run "${G[@]}" functions deploy "$FUNCTION" --gen2 --region="$REGION" --runtime="$RUNTIME" \
      --source="$STAGE" --entry-point=handle_request --trigger-http --ingress-settings=internal-and-gclb \
      --service-account="$SA_EMAIL" --build-service-account="projects/$PROJECT/serviceAccounts/$BUILD_SA_EMAIL" \
      --env-vars-file="$ENV_FILE" --set-secrets="$(function_secrets)" \
      --cpu="$CPU" --memory="$MEMORY" --concurrency="$CONCURRENCY" --timeout=60s \
      --min-instances="$MIN_INSTANCES" --max-instances="$MAX_INSTANCES" --update-labels="deploy_hash=$expected" \
      "${vpc[@]}"
  fi
  apply_invoker
}

# Load-balancer traffic carries no Google identity (clients prove themselves with mTLS), so the
# invoker check must let it through; ingress and the proxy secret keep everyone else out.
# Checked on every run, so a deploy whose binding was refused is repaired by the next one.
apply_invoker() {
  local run_flags=(--region="$REGION") disabled
  disabled=$(read_state "${G[@]}" run services describe "$FUNCTION" "${run_flags[@]}" \
    --format="value(metadata.annotations['run.googleapis.com/invoker-iam-disabled'])") || exit 3
  if [[ $INVOKER == no-iam-check ]]; then
    [[ $disabled == true ]] || run "${G[@]}" run services update "$FUNCTION" "${run_flags[@]}" --no-invoker-iam-check
    [[ $DRY_RUN == 1 ]] || change_bindings remove allUsers roles/run.invoker "run services" "$FUNCTION" "${run_flags[@]}"
  else
    [[ $disabled != true ]] || run "${G[@]}" run services update "$FUNCTION" "${run_flags[@]}" --invoker-iam-check
    change_bindings add allUsers roles/run.invoker "run services" "$FUNCTION" "${run_flags[@]}"
  fi
}
