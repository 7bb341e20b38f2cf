#!/bin/sh
# Creates the secret files of infra/compose.yaml in infra/secrets/ (git-ignored), each with
# a fresh random password. Files that exist are kept, so running it again changes nothing.
#   infra/compose/make-secrets.sh
# Makes:
#   vault-passphrase            seals the keys in s3://signet-vault/compose/
#   amqp-url                    the workers' broker URL (user signet)
#   ci-amqp-url                 the producer's broker URL (user ci, named in compose/policy.toml)
#   rabbitmq-definitions.json   RabbitMQ's users (signet, ci, admin) and their permissions
#   admin-password              the management UI's admin password (http://127.0.0.1:15672)
set -eu
dir="$(cd "$(dirname "$0")/.." && pwd)/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"

# Letters and digits only: the URLs need no escaping, and KEDA refuses special characters.
rand() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32; }

# The containers run as other users (signet 65532, RabbitMQ 999) and compose bind-mounts the
# files as they are, so they must be readable; the directory stays private.
put() {
  if [ -e "$dir/$1" ]; then
    echo "make-secrets: $dir/$1 exists, kept"
  else
    printf '%s' "$2" >"$dir/$1"
    chmod 0644 "$dir/$1"
    echo "make-secrets: wrote $dir/$1"
  fi
}

if [ -e "$dir/rabbitmq-definitions.json" ]; then
  echo "make-secrets: $dir/rabbitmq-definitions.json exists, kept (with the URLs that match it)"
else
  signet_pw="$(rand)"; ci_pw="$(rand)"; admin_pw="$(rand)"
  rm -f "$dir/amqp-url" "$dir/ci-amqp-url" "$dir/admin-password"
  put amqp-url "amqp://signet:${signet_pw}@rabbitmq:5672/%2f"
  put ci-amqp-url "amqp://ci:${ci_pw}@rabbitmq:5672/%2f"
  put admin-password "$admin_pw"
  # signet: the topology (signet.*), its job locks (signet.lock.*), the events.
  # ci: `signet submit` declares the topology, publishes to the default exchange and, with
  #     --wait, reads the events through a server-named queue (amq.gen-*).
  put rabbitmq-definitions.json "$(cat <<JSON
{
  "vhosts": [{"name": "/"}],
  "users": [
    {"name": "signet", "password": "${signet_pw}", "tags": ""},
    {"name": "ci", "password": "${ci_pw}", "tags": ""},
    {"name": "admin", "password": "${admin_pw}", "tags": "administrator"}
  ],
  "permissions": [
    {"user": "signet", "vhost": "/", "configure": "^signet\\\\.", "write": "^(signet\\\\..*|amq\\\\.default)\$", "read": "^signet\\\\."},
    {"user": "ci", "vhost": "/", "configure": "^(signet\\\\..*|amq\\\\.gen-.*)\$", "write": "^(signet\\\\..*|amq\\\\.gen-.*|amq\\\\.default)\$", "read": "^(signet\\\\..*|amq\\\\.gen-.*)\$"},
    {"user": "admin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
  ]
}
JSON
)"
fi
put vault-passphrase "$(rand)"
