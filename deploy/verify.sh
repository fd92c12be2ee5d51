# shellcheck shell=bash
# What is left for the user (text or JSON), and --verify: the deployed stack checked from outside.

json_string() { local value=${1//\\/\\\\}; printf '"%s"' "${value//\"/\\\"}"; }

print_summary() {
  local address function_uri provider audience cred_command
  address=$(read_state "${G[@]}" compute addresses describe "$IP_NAME" --global --format='value(address)') || exit 3
  function_uri=$(read_state "${G[@]}" functions describe "$FUNCTION" --gen2 --region="$REGION" \
    --format='value(serviceConfig.uri)') || exit 3
  provider=projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL_ID/providers/$PROVIDER_ID
  audience=//iam.googleapis.com/$provider
  cred_command="gcloud iam workload-identity-pools create-cred-config $provider --service-account=SERVICE_ACCOUNT_EMAIL --output-file=token-service.json --executable-command='curl --silent https://$FQDN/token --data format=external_credential --data grant_type=client_credentials --cert /path/client.pem --key /path/client-key.pem'"
  if [[ $OUTPUT == json ]]; then
    cat <<EOT
{
  "load_balancer_ip": $(json_string "${address:-IP_ADDRESS}"),
  "dns_record": $(json_string "$FQDN. 300 IN A ${address:-IP_ADDRESS}"),
  "issuer": $(json_string "https://$FQDN"),
  "workload_identity_provider": $(json_string "$provider"),
  "audience": $(json_string "$audience"),
  "principal_format": $(json_string "principal://iam.googleapis.com/projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL_ID/subject/CLIENT_ID"),
  "service_accounts": {"runtime": $(json_string "$SA_EMAIL"), "build": $(json_string "$BUILD_SA_EMAIL")},
  "function_uri": $(json_string "$function_uri"),
  "proxy_secret": $(json_string "projects/$PROJECT/secrets/$PROXY_SECRET"),
  "create_cred_config": $(json_string "$cred_command")
}
EOT
    return
  fi
  cat <<EOT

Create this DNS record (the Google-managed certificate is issued once it resolves; allow up to an hour):
  $FQDN.  300  IN  A  ${address:-IP_ADDRESS}

Then check the stack from outside (load balancer changes can take minutes to an hour to take effect):
  ./deploy.sh --fqdn $FQDN --verify

Clients authenticate as this principal; grant it roles, or roles/iam.workloadIdentityUser on a service account:
  principal://iam.googleapis.com/projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL_ID/subject/CLIENT_ID
  (CLIENT_ID: the value of the $CLIENT_ID_HEADER header, the certificate's base64 SHA-256 fingerprint by default)

Client libraries, gcloud and Terraform:
  $cred_command
  export GOOGLE_APPLICATION_CREDENTIALS=\$PWD/token-service.json GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1
EOT
}

verify_stack() {
  [[ $FQDN =~ ^[a-z0-9.-]+(:[0-9]+)?$ ]] || fail "--verify needs --fqdn NAME (the issuer is https://NAME)"
  local base=${VERIFY_URL:-https://$FQDN} failures=0 answer status body jwks_uri passed
  local -a curl_flags=(--silent --show-error --max-time 20 --write-out '\n%{http_code}')
  [[ -z $VERIFY_CACERT ]] || curl_flags+=(--cacert "$VERIFY_CACERT")
  check() {  # DESCRIPTION PASSED(0|1)
    if [[ $2 == 0 ]]; then printf 'ok    %s\n' "$1"; else printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); fi
  }
  split() { status=${answer##*$'\n'}; body=${answer%$'\n'*}; }

  answer=$(curl "${curl_flags[@]}" "$base/.well-known/openid-configuration" || true)
  split
  passed=1
  [[ ! ($status == 200 && $body =~ \"issuer\":\ ?\"https://$FQDN\") ]] || passed=0
  check "discovery at $base names issuer https://$FQDN" $passed
  jwks_uri=$(grep -o '"jwks_uri": *"[^"]*"' <<<"$body" | cut -d'"' -f4 || true)
  answer=
  [[ -z $jwks_uri ]] || answer=$(curl "${curl_flags[@]}" "${jwks_uri/#https:\/\/$FQDN/$base}" || true)
  split
  passed=1
  [[ ! ($status == 200 && $body == *'"keys"'* && $body == *'"kid"'*) ]] || passed=0
  check "JWKS (${jwks_uri:-no jwks_uri in discovery}) serves signing keys" $passed
  answer=$(curl "${curl_flags[@]}" --data grant_type=client_credentials "$base/token" || true)
  split
  passed=1
  [[ ! ($status == 401 && $body == *'"error":"invalid_client"'* && $body == *'certificate'*) ]] || passed=0
  check "a token request without a client certificate is refused (401 invalid_client)" $passed
  if [[ $failures -gt 0 ]]; then
    printf 'deploy.sh: %d check(s) failed against %s\n' "$failures" "$base" >&2
    return 1
  fi
  printf 'The stack at %s answers as it should.\n' "$base"
}
