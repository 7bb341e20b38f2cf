# One-shot setup of infra/compose.yaml, run by the init-key service (busybox sh of the
# image's `init` stage): seal a signing key `release` in the S3 vault unless it is already
# there, then print its public key. Uses SIGNET_VAULT, SIGNET_VAULT_PASSPHRASE_FILE,
# SIGNET_S3_ENDPOINT and the AWS_* variables of the service.
set -eu

name="${SIGNET_INIT_KEY:-release}"
uid="${SIGNET_INIT_UID:-signet compose release key <release@example.invalid>}"

keys="$(signet keys list)"
if printf '%s\n' "$keys" | grep -q "^${name}[[:space:]]"; then
  echo "init-key: key ${name} already in ${SIGNET_VAULT}"
else
  signet keys generate "${name}" --uid "${uid}"
  echo "init-key: generated key ${name} in ${SIGNET_VAULT}"
fi
signet keys list
signet keys export "${name}"
