#!/usr/bin/env bash
# Installs what signet needs to build and test on a fresh Debian 12 machine: sequoia's
# build dependencies (OpenSSL backend), the real verifiers the tests run, and the fixture
# builders. Idempotent: does nothing when everything is present.
set -euo pipefail

packages=(
  # build: sequoia-openpgp (crypto-openssl) needs libssl and libclang (bindgen)
  build-essential pkg-config libssl-dev libclang-dev
  # verifiers the tests and demo run
  rpm gnupg sqv debsigs debsig-verify apt-utils
  # dnf checks a repository with the exported .repo snippet (repo_gpgcheck=1)
  dnf
  # SoftHSM2: the PKCS#11 token the HSM tests sign through
  softhsm2
  # fixture builders and helpers
  dpkg-dev createrepo-c cpio xz-utils zstd gzip binutils python3-venv curl procps
  # promtool (checks the worker's /metrics); the package's own server is not started
  prometheus
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # No package may start a service (prometheus would start its server): a policy-rc.d
  # that refuses, for the length of the install, unless the machine already has one.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
