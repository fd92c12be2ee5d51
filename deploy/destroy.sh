# shellcheck shell=bash
# Delete everything deploy_stack creates, dependants first (Google refuses to delete a resource
# that another still uses). A read that fails stops the script: "Done" means deleted.

delete_if_present() {  # NAME "LIST-CMD" "DELETE-CMD" (both without the G prefix; word-split)
  local name=$1
  local -a list_words delete_words
  read -ra list_words <<<"$2"
  read -ra delete_words <<<"$3"
  if present "$name" "${G[@]}" "${list_words[@]}"; then run "${G[@]}" "${delete_words[@]}"; fi
}

destroy_stack() {
  if [[ $YES == 0 && $DRY_RUN == 0 ]]; then
    printf 'This deletes the token service "%s", its load balancer, mTLS policies, secret, Redis instance (and\n' "$FUNCTION"
    printf 'the replay cache and rate limits in it), VPC connector, workload identity\n'
    printf 'pool "%s", custom role and service accounts in project "%s". Type the project id to confirm: ' \
      "$POOL_ID" "$PROJECT"
    read -r answer
    [[ $answer == "$PROJECT" ]] || fail "not confirmed; nothing deleted"
  fi
  say "Deleting the load balancer, front to back"
  delete_if_present "$FORWARDING_RULE" "compute forwarding-rules list --global" \
    "compute forwarding-rules delete $FORWARDING_RULE --global"
  delete_if_present "$PROXY" "compute target-https-proxies list --global" \
    "compute target-https-proxies delete $PROXY --global"
  delete_if_present "$URL_MAP" "compute url-maps list --global" "compute url-maps delete $URL_MAP --global"
  delete_if_present "$BACKEND" "compute backend-services list --global" \
    "compute backend-services delete $BACKEND --global"
  delete_if_present "$NEG_NAME" "compute network-endpoint-groups list --regions=$REGION" \
    "compute network-endpoint-groups delete $NEG_NAME --region=$REGION"
  local certificates certificate
  certificates=$(read_state "${G[@]}" compute ssl-certificates list --global --filter="name~^$CERT_PREFIX-" \
    --format='value(name)') || exit 3
  [[ $DRY_RUN == 0 ]] || certificates=$CERT_PREFIX-${FQDN:+$(digest <<<"$FQDN" | cut -c1-8)}
  for certificate in $certificates; do run "${G[@]}" compute ssl-certificates delete "$certificate" --global; done
  delete_if_present "$SSL_POLICY" "compute ssl-policies list --global" "compute ssl-policies delete $SSL_POLICY --global"
  delete_if_present "$TLS_POLICY" "network-security server-tls-policies list --location=global" \
    "network-security server-tls-policies delete $TLS_POLICY --location=global"
  delete_if_present "$TRUST_CONFIG" "certificate-manager trust-configs list --location=global" \
    "certificate-manager trust-configs delete $TRUST_CONFIG --location=global"
  delete_if_present "$IP_NAME" "compute addresses list --global" "compute addresses delete $IP_NAME --global"

  say "Deleting monitoring, the function, its secret, and its Redis instance and VPC connector"
  local found alert_policy metric listed
  found=$(find_alert_policy) || exit 3
  read -r alert_policy _ <<<"$found"
  [[ $DRY_RUN == 0 ]] || alert_policy=projects/$PROJECT/alertPolicies/ALERT_POLICY_ID
  [[ -z $alert_policy ]] || monitoring DELETE "v3/$alert_policy" >/dev/null
  listed=$(read_state "${G[@]}" logging metrics list --format='value(name)') || exit 3
  for metric in "${METRICS[@]}"; do
    if [[ $DRY_RUN == 1 ]] || grep -qxF "$metric" <<<"$listed"; then run "${G[@]}" logging metrics delete "$metric"; fi
  done
  listed=$(read_state "${G[@]}" functions list --regions="$REGION" --filter="name~/functions/$FUNCTION\$" \
    --format='value(name.basename())') || exit 3
  if [[ $DRY_RUN == 1 || -n $listed ]]; then
    run "${G[@]}" functions delete "$FUNCTION" --gen2 --region="$REGION"
  fi
  delete_if_present "$PROXY_SECRET" "secrets list" "secrets delete $PROXY_SECRET"
  destroy_redis  # after the function, which uses the connector

  say "Deleting the workload identity provider and pool (Google keeps them restorable for 30 days)"
  local provider_state pool_state
  provider_state=$(state_of "$PROVIDER_ID" "${G[@]}" iam workload-identity-pools providers list \
    --workload-identity-pool="$POOL_ID" --location=global)
  if [[ $DRY_RUN == 1 || $provider_state == ACTIVE ]]; then
    run "${G[@]}" iam workload-identity-pools providers delete "$PROVIDER_ID" --workload-identity-pool="$POOL_ID" \
      --location=global
  fi
  pool_state=$(state_of "$POOL_ID" "${G[@]}" iam workload-identity-pools list --location=global)
  if [[ $DRY_RUN == 1 || $pool_state == ACTIVE ]]; then
    run "${G[@]}" iam workload-identity-pools delete "$POOL_ID" --location=global
  fi

  say "Deleting the service accounts, their project roles and the signing role"
  change_bindings remove "serviceAccount:$BUILD_SA_EMAIL" "${BUILD_ROLES[*]}" projects "$PROJECT"
  for account in "$FUNCTION" "$FUNCTION-build"; do
    if present "$account@$PROJECT.iam.gserviceaccount.com" "${G[@]}" iam service-accounts list \
        --filter="email:$account@"; then
      run "${G[@]}" iam service-accounts delete "$account@$PROJECT.iam.gserviceaccount.com"
    fi
  done
  listed=$(read_state "${G[@]}" iam roles list --format='value(name.basename())') || exit 3
  if [[ $DRY_RUN == 1 ]] || grep -qxF "$SIGNER_ROLE_ID" <<<"$listed"; then
    run "${G[@]}" iam roles delete "$SIGNER_ROLE_ID"
  fi
  say "Done: every resource above is deleted (pool, provider and role stay restorable; the next deploy restores them)."
}
