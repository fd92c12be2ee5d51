# shellcheck shell=bash
# The load balancer, built so that it never serves without mTLS: the TrustConfig, the
# ServerTlsPolicy and the SSL policy exist before the proxy, which is created with them, and
# the forwarding rule (the public address) comes last.

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

# The CAs as files of one certificate each, re-encoded by openssl; TRUST_STORE is the
# --trust-store flag naming them, TRUST_DIGEST what they hold.
write_trust_store() {
  local kind file pem count=0 anchors=() intermediates=()
  rm -rf "$DEPLOY_DIR/trust-store"
  mkdir -p "$DEPLOY_DIR/trust-store"
  for kind in anchor intermediate; do
    local -a files=("${CA_CERTS[@]}")
    [[ $kind == anchor ]] || files=("${INTERMEDIATE_CERTS[@]}")
    for file in "${files[@]}"; do
      while read -r pem; do
        count=$((count + 1))
        printf '%b' "$pem" >"$DEPLOY_DIR/trust-store/$kind-$count.pem"
        if [[ $kind == anchor ]]; then anchors+=("$DEPLOY_DIR/trust-store/$kind-$count.pem")
        else intermediates+=("$DEPLOY_DIR/trust-store/$kind-$count.pem"); fi
      done < <(pem_certificates "$file")
    done
  done
  TRUST_STORE="trust-anchors=$(IFS=';'; echo "${anchors[*]}")"
  [[ ${#intermediates[@]} -eq 0 ]] || TRUST_STORE+=",intermediate-cas=$(IFS=';'; echo "${intermediates[*]}")"
  TRUST_DIGEST=$( (cat "${anchors[@]}"; echo intermediates
    [[ ${#intermediates[@]} -eq 0 ]] || cat "${intermediates[@]}") | digest)
}

setup_mtls_policies() {
  say "5. mTLS and TLS policies: TrustConfig from your CAs, ServerTlsPolicy, SSL policy (TLS 1.2+)"
  local current global=(--location=global)
  write_trust_store
  if present "$TRUST_CONFIG" "${G[@]}" certificate-manager trust-configs list "${global[@]}"; then
    current=$(read_state "${G[@]}" certificate-manager trust-configs describe "$TRUST_CONFIG" "${global[@]}" \
      --format='value(description)') || exit 3
    # An update replaces the trust store in place: the policy and the proxy keep pointing at it.
    [[ $DRY_RUN == 1 || $current == "token service client CAs $TRUST_DIGEST" ]] ||
      run "${G[@]}" certificate-manager trust-configs update "$TRUST_CONFIG" "${global[@]}" \
        --trust-store="$TRUST_STORE" --description="token service client CAs $TRUST_DIGEST"
  else
    run "${G[@]}" certificate-manager trust-configs create "$TRUST_CONFIG" "${global[@]}" \
      --trust-store="$TRUST_STORE" --description="token service client CAs $TRUST_DIGEST"
  fi
  # ALLOW mode: Google's STS fetches the discovery document without a client certificate; the
  # function refuses a token request unless the certificate was present and verified.
  POLICY_FILE=$DEPLOY_DIR/server-tls-policy.yaml
  cat >"$POLICY_FILE" <<EOT
name: $TLS_POLICY
mtlsPolicy:
  clientValidationMode: ALLOW_INVALID_OR_MISSING_CLIENT_CERT
  clientValidationTrustConfig: projects/$PROJECT/locations/global/trustConfigs/$TRUST_CONFIG
EOT
  current=
  if present "$TLS_POLICY" "${G[@]}" network-security server-tls-policies list "${global[@]}"; then
    current=$(read_state "${G[@]}" network-security server-tls-policies describe "$TLS_POLICY" "${global[@]}" \
      --format='value(mtlsPolicy.clientValidationMode,mtlsPolicy.clientValidationTrustConfig.basename())') || exit 3
  fi
  [[ $current == "ALLOW_INVALID_OR_MISSING_CLIENT_CERT	$TRUST_CONFIG" ]] ||
    run "${G[@]}" network-security server-tls-policies import "$TLS_POLICY" --source="$POLICY_FILE" "${global[@]}"
  if present "$SSL_POLICY" "${G[@]}" compute ssl-policies list --global; then
    current=$(read_state "${G[@]}" compute ssl-policies describe "$SSL_POLICY" --global \
      --format='value(profile,minTlsVersion)') || exit 3
    [[ $DRY_RUN == 1 || $current == "MODERN	TLS_1_2" ]] ||
      run "${G[@]}" compute ssl-policies update "$SSL_POLICY" --global --profile=MODERN --min-tls-version=1.2
  else
    run "${G[@]}" compute ssl-policies create "$SSL_POLICY" --global --profile=MODERN --min-tls-version=1.2
  fi
}

setup_backend() {
  say "6. Serverless NEG (Cloud Run type) and the backend service with the mTLS headers"
  local target groups headers desired header
  if present "$NEG_NAME" "${G[@]}" compute network-endpoint-groups list --regions="$REGION"; then
    target=$(read_state "${G[@]}" compute network-endpoint-groups describe "$NEG_NAME" --region="$REGION" \
      --format='value(cloudRun.service)') || exit 3
    if [[ $DRY_RUN == 0 && $target != "$FUNCTION" ]]; then  # a NEG cannot change its target
      present "$BACKEND" "${G[@]}" compute backend-services list --global &&
        run "${G[@]}" compute backend-services remove-backend "$BACKEND" --global \
          --network-endpoint-group="$NEG_NAME" --network-endpoint-group-region="$REGION"
      run "${G[@]}" compute network-endpoint-groups delete "$NEG_NAME" --region="$REGION"
      create_neg
    fi
  else
    create_neg
  fi
  present "$BACKEND" "${G[@]}" compute backend-services list --global ||
    run "${G[@]}" compute backend-services create "$BACKEND" --global --load-balancing-scheme=EXTERNAL_MANAGED
  groups=$(read_state "${G[@]}" compute backend-services describe "$BACKEND" --global \
    --format='value(backends[].group)') || exit 3
  [[ $groups == *"/networkEndpointGroups/$NEG_NAME"* ]] ||
    run "${G[@]}" compute backend-services add-backend "$BACKEND" --global \
      --network-endpoint-group="$NEG_NAME" --network-endpoint-group-region="$REGION"
  local header_flags=()
  desired=
  for header in "${MTLS_HEADERS[@]}" "$PROXY_SECRET_HEADER:$PROXY_SECRET_VALUE"; do
    header_flags+=("--custom-request-header=$header")
    desired+="${desired:+;}$header"
  done
  headers=$(read_state "${G[@]}" compute backend-services describe "$BACKEND" --global \
    --format='value(customRequestHeaders.list(separator=";"),logConfig.enable)') || exit 3
  [[ $headers == "$desired	True" ]] ||
    run "${G[@]}" compute backend-services update "$BACKEND" --global --enable-logging --logging-sample-rate=1 \
      "${header_flags[@]}"
}

create_neg() {
  # Google's serverless NEG documentation puts 2nd-gen functions under the Cloud Run type.
  run "${G[@]}" compute network-endpoint-groups create "$NEG_NAME" --region="$REGION" \
    --network-endpoint-type=serverless --cloud-run-service="$FUNCTION"
}

setup_frontend() {
  say "7. Address, certificate, URL map, HTTPS proxy (created with its mTLS and SSL policies), forwarding rule"
  local cert_name current changes=() certificates certificate
  # Google-managed certificates cannot change their domains: a new FQDN gets a new certificate.
  cert_name=$CERT_PREFIX-$(digest <<<"$FQDN" | cut -c1-8)
  present "$IP_NAME" "${G[@]}" compute addresses list --global ||
    run "${G[@]}" compute addresses create "$IP_NAME" --global
  present "$cert_name" "${G[@]}" compute ssl-certificates list --global ||
    run "${G[@]}" compute ssl-certificates create "$cert_name" --domains="$FQDN" --global
  present "$URL_MAP" "${G[@]}" compute url-maps list --global ||
    run "${G[@]}" compute url-maps create "$URL_MAP" --default-service="$BACKEND" --global
  local tls_policy=projects/$PROJECT/locations/global/serverTlsPolicies/$TLS_POLICY
  if present "$PROXY" "${G[@]}" compute target-https-proxies list --global; then
    current=$(read_state "${G[@]}" compute target-https-proxies describe "$PROXY" --global \
      --format='value(serverTlsPolicy.basename(),sslPolicy.basename(),sslCertificates.map().basename().list())') ||
      exit 3
    IFS=$'\t' read -r -a current <<<"$current"
    [[ ${current[0]:-} == "$TLS_POLICY" ]] || changes+=(--server-tls-policy="$tls_policy")
    [[ ${current[1]:-} == "$SSL_POLICY" ]] || changes+=(--ssl-policy="$SSL_POLICY")
    [[ ${current[2]:-} == "$cert_name" ]] || changes+=(--ssl-certificates="$cert_name")
    [[ $DRY_RUN == 1 || ${#changes[@]} -eq 0 ]] ||
      run "${G[@]}" compute target-https-proxies update "$PROXY" --global "${changes[@]}"
  else
    run "${G[@]}" compute target-https-proxies create "$PROXY" --global --url-map="$URL_MAP" \
      --ssl-certificates="$cert_name" --server-tls-policy="$tls_policy" --ssl-policy="$SSL_POLICY"
  fi
  present "$FORWARDING_RULE" "${G[@]}" compute forwarding-rules list --global ||
    run "${G[@]}" compute forwarding-rules create "$FORWARDING_RULE" --global \
      --load-balancing-scheme=EXTERNAL_MANAGED --address="$IP_NAME" --target-https-proxy="$PROXY" --ports=443
  # Certificates for earlier FQDNs, now that the proxy no longer uses them.
  certificates=$(read_state "${G[@]}" compute ssl-certificates list --global --filter="name~^$CERT_PREFIX-" \
    --format='value(name)') || exit 3
  for certificate in $certificates; do
    [[ $certificate == "$cert_name" ]] || run "${G[@]}" compute ssl-certificates delete "$certificate" --global
  done
}
