#!/usr/bin/env bash
# Deployment to Google Cloud (Cloud Functions 2nd gen behind the mTLS load
# balancer) is not written yet; see the README's "Status" section.
set -euo pipefail
echo "deploy.sh: not implemented yet; nothing was created. Run the service locally with 'make run'." >&2
exit 2
