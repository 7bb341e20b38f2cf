#!/bin/bash
# LocalStack READY hook (docker compose path): create every bucket listed in
# buckets.txt, mounted at /etc/localstack/signet/buckets.txt by docker-compose.yml.
# The non-Docker path (start.sh / s3.sh) uses init/01-buckets.py instead.
set -euo pipefail
buckets_file="${SIGNET_BUCKETS_FILE:-/etc/localstack/signet/buckets.txt}"
sed -e 's/#.*//' -e 's/[[:space:]]//g' "$buckets_file" | while read -r bucket; do
    [ -n "$bucket" ] || continue
    if awslocal s3api head-bucket --bucket "$bucket" </dev/null >/dev/null 2>&1; then
        echo "signet: bucket $bucket exists"
    else
        awslocal s3 mb "s3://$bucket" </dev/null
    fi
done
# Marker for the compose healthcheck.
touch /tmp/signet-buckets-ready
