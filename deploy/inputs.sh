# shellcheck shell=bash
# Inputs: every problem reported at once, before any gcloud call; then the resources' names.

# pem_certificates FILE: each certificate in FILE as one line with \n escapes (TrustConfig's
# format), re-encoded by openssl so CRLF line ends, stray text and bundles come out clean.
pem_certificates() {
  openssl crl2pkcs7 -nocrl -certfile "$1" 2>/dev/null | openssl pkcs7 -print_certs 2>/dev/null |
    awk '/-----BEGIN CERTIFICATE-----/ {pem = ""; inside = 1}
         inside {pem = pem $0 "\\n"}
         /-----END CERTIFICATE-----/ {print pem; inside = 0}'
}

# Cloud Run's smallest memory for a CPU count (4 vCPU need 2 GiB, 6 and 8 need 4 GiB).
min_memory_mib() { case $1 in 4) echo 2048 ;; 6|8) echo 4096 ;; *) echo 512 ;; esac; }

memory_mib() {
  local size=$1
  case $size in
    *Gi) echo $(( ${size%Gi} * 1024 )) ;;
    *Mi) echo "${size%Mi}" ;;
  esac
}

validate_inputs() {
  local problems=() number file count
  [[ -n $PROJECT ]] || problems+=("--project is required")
  [[ $PROJECT =~ ^$|^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || problems+=("--project '$PROJECT' is not a project id")
  if [[ -z $FQDN && $DESTROY == 0 ]]; then
    problems+=("--fqdn is required: the public DNS name clients and Google use (the issuer is https://FQDN)")
  elif [[ -n $FQDN && ! $FQDN =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$ ]]; then
    problems+=("--fqdn '$FQDN' is not a lower-case DNS name (no scheme, port or path)")
  fi
  for id in "$POOL_ID" "$PROVIDER_ID"; do
    [[ $id =~ ^[a-z0-9-]{4,32}$ && $id != gcp-* ]] || problems+=("pool/provider id '$id' must be 4-32 of a-z, 0-9, -")
  done
  # The runtime service account is named after the function and the build one adds "-build":
  # service-account ids are 6-30 characters.
  [[ $FUNCTION =~ ^[a-z][a-z0-9-]{4,22}[a-z0-9]$ ]] ||
    problems+=("--function '$FUNCTION' must be 6-24 of a-z, 0-9, - (starting with a letter): it also names the service accounts")
  [[ $REGION =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || problems+=("--region '$REGION' is not a region")
  for number in "$CONCURRENCY" "$MIN_INSTANCES" "$MAX_INSTANCES" "$ALERT_THRESHOLD"; do
    [[ $number =~ ^[0-9]+$ ]] || problems+=("'$number' is not a whole number")
  done
  [[ ! $CONCURRENCY =~ ^[0-9]+$ ]] || (( CONCURRENCY >= 1 && CONCURRENCY <= 1000 )) ||
    problems+=("--concurrency must be 1-1000")
  [[ ! $MIN_INSTANCES$MAX_INSTANCES =~ ^[0-9]+$ ]] || (( MAX_INSTANCES >= 1 && MIN_INSTANCES <= MAX_INSTANCES )) ||
    problems+=("--max-instances must be at least 1 and at least --min-instances")
  if [[ $CPU =~ ^(1|2|4|6|8)$ ]]; then
    [[ -n $MEMORY ]] || MEMORY=$(( $(min_memory_mib "$CPU") > 1024 ? $(min_memory_mib "$CPU") / 1024 : 1 ))Gi
    if [[ ! $MEMORY =~ ^[1-9][0-9]*(Mi|Gi)$ ]]; then
      problems+=("--memory '$MEMORY' must look like 512Mi or 2Gi")
    elif (( $(memory_mib "$MEMORY") < $(min_memory_mib "$CPU") || $(memory_mib "$MEMORY") > CPU * 4096 )); then
      problems+=("--memory $MEMORY does not fit --cpu $CPU: Cloud Run wants $(( $(min_memory_mib "$CPU") ))Mi to $(( CPU * 4 ))Gi")
    fi
  else
    problems+=("--cpu must be 1, 2, 4, 6 or 8 (concurrency needs at least one whole vCPU)")
  fi
  [[ $INVOKER =~ ^(all-users|no-iam-check)$ ]] || problems+=("--invoker must be all-users or no-iam-check")
  [[ $OUTPUT =~ ^(text|json)$ ]] || problems+=("--output must be text or json")
  [[ $CLIENT_ID_HEADER =~ ^[A-Za-z0-9-]{1,128}$ ]] || problems+=("--client-id-header '$CLIENT_ID_HEADER' is not a header name")
  [[ -z $NOTIFICATION_CHANNEL || $NOTIFICATION_CHANNEL =~ ^projects/[^/]+/notificationChannels/[0-9]+$ ]] ||
    problems+=("--notification-channel must be projects/PROJECT/notificationChannels/ID")
  if [[ $DESTROY == 0 ]]; then
    command -v openssl >/dev/null || problems+=("openssl is required (it normalises the CA certificates)")
    [[ ${#CA_CERTS[@]} -gt 0 ]] || problems+=("--ca-cert is required: the PEM root CA of your client certificates")
    for file in "${CA_CERTS[@]}" "${INTERMEDIATE_CERTS[@]}"; do
      if [[ ! -r $file ]]; then
        problems+=("cannot read CA file '$file'")
      elif ! grep -q -- '-----BEGIN CERTIFICATE-----' "$file"; then
        problems+=("'$file' is not a PEM certificate (it must contain -----BEGIN CERTIFICATE-----)")
      else
        count=$(grep -c -- '-----BEGIN CERTIFICATE-----' "$file")
        [[ $(pem_certificates "$file" | grep -c .) == "$count" ]] ||
          problems+=("'$file' holds a PEM block that is not a valid X.509 certificate")
      fi
    done
    [[ -z $POLICY || -r $POLICY ]] || problems+=("cannot read --policy '$POLICY'")
  fi
  [[ $REDIS == 0 ]] || validate_redis_inputs
  if [[ ${#problems[@]} -gt 0 ]]; then
    printf 'deploy.sh: nothing was created or changed:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 2
  fi
}

name_resources() {
  G=(gcloud --project="$PROJECT" --quiet)
  SA_EMAIL=$FUNCTION@$PROJECT.iam.gserviceaccount.com
  BUILD_SA_EMAIL=$FUNCTION-build@$PROJECT.iam.gserviceaccount.com
  SIGNER_ROLE_ID=${FUNCTION//-/_}_signJwt
  SIGNER_ROLE=projects/$PROJECT/roles/$SIGNER_ROLE_ID
  PROXY_SECRET=$FUNCTION-proxy-secret
  PROXY_SECRET_HEADER=X-Token-Service-Proxy-Secret
  IP_NAME=$FUNCTION-ip
  CERT_PREFIX=$FUNCTION-cert
  NEG_NAME=$FUNCTION-neg
  BACKEND=$FUNCTION-backend
  URL_MAP=$FUNCTION-url-map
  PROXY=$FUNCTION-proxy
  FORWARDING_RULE=$FUNCTION-https
  TRUST_CONFIG=$FUNCTION-ca
  TLS_POLICY=$FUNCTION-mtls
  SSL_POLICY=$FUNCTION-tls12
  ALERT_NAME="$FUNCTION refusal rate"
  METRICS=(token_service_tokens_issued token_service_refusals token_service_upstream_latency)
  name_redis_resources
  # The build account's least roles: read the uploaded source, push the image, write build logs.
  BUILD_ROLES=(roles/storage.objectViewer roles/artifactregistry.writer roles/logging.logWriter)
}
