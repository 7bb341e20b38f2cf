#!/usr/bin/env bash
# Independent verifiers for signet's output, built only on the distro's own
# tools, so tests never trust signet to check itself.
#
# Use as a library:   source tests/support/verifiers.sh; verify_rpm CERT RPM
# or as a command:    tests/support/verifiers.sh verify_rpm CERT RPM
#
#   verify_rpm        CERT RPM
#   verify_deb        CERT DEB
#   verify_gpg        CERT SIGFILE [DATAFILE]   (no DATAFILE: clearsigned, e.g. InRelease)
#   verify_sqv        CERT SIGFILE DATAFILE     (sqv 1.1 has no clearsigned mode)
#   verify_apt_repo   CERT REPODIR              (flat repo: "deb file:REPODIR ./")
#   verify_sha256sums DIR                       (DIR/SHA256SUMS)
#   verify_dnf_repo   REPOSDIR PACKAGE          (dnf with only REPOSDIR/*.repo installs
#                                                PACKAGE into a throwaway installroot)
#
# CERT is an OpenPGP public key file (ASCII-armored; binary also accepted).
# Each function returns 0 only on positive proof of a good signature, else
# prints a one-line reason (plus tool output where useful) to stderr and
# returns non-zero (1 = rejected, 2 = usage). All state lives in a private
# temp dir that is removed afterwards: never the system rpmdb, ~/.gnupg or
# /etc/apt.
#
# Every function body is a ( subshell ) so its EXIT trap cleans the temp dir
# and `exit` cannot kill a caller that sourced this file. Errors are checked
# explicitly (set +e inside) so behaviour is the same whether or not the
# caller runs under set -e or calls us from an `if`.

# ------------------------------------------------------------ helpers ----

# _v_fail MESSAGE...: one-line reason to stderr, leave the function's subshell.
_v_fail() {
    printf '%s: %s\n' "${_V_FN:-verifiers.sh}" "$*" >&2
    exit 1
}

# _v_usage N_MIN N_MAX N_GOT SYNOPSIS
_v_usage() {
    if (($3 < $1 || $3 > $2)); then
        printf 'usage: %s\n' "$4" >&2
        exit 2
    fi
}

_v_need_files() {
    local f
    for f in "$@"; do
        [[ -f $f && -r $f ]] || _v_fail "not a readable file: $f"
    done
}

# _v_tmp: make the private temp dir in $_V_TMP and arrange its removal.
_v_tmp() {
    _V_TMP=$(mktemp -d "${TMPDIR:-/tmp}/signet-verify.XXXXXX") || _v_fail "mktemp failed"
    # shellcheck disable=SC2064 # expand now: the path is fixed from here on
    trap "rm -rf -- '$_V_TMP'" EXIT
}

# _v_gnupghome: throwaway GNUPGHOME inside the temp dir (gpg creates
# ~/.gnupg on first use otherwise, even for --show-keys).
_v_gnupghome() {
    export GNUPGHOME="$_V_TMP/gnupg"
    mkdir -m 700 "$GNUPGHOME" || _v_fail "cannot create $GNUPGHOME"
}

_v_is_armored() { grep -q -m1 -- '-----BEGIN PGP PUBLIC KEY BLOCK-----' "$1"; }

# _v_binary_cert CERT OUT: binary (dearmored) copy of CERT.
_v_binary_cert() {
    if _v_is_armored "$1"; then
        gpg --batch --quiet --dearmor <"$1" >"$2" || _v_fail "gpg --dearmor failed on $1"
    else
        cp -- "$1" "$2" || _v_fail "cannot copy $1"
    fi
}

# -------------------------------------------------------------- RPM ----

# rpmkeys --checksig exits 0 for an UNSIGNED rpm (digests only), so the exit
# code proves nothing: require an explicit OK header-signature line and no
# negative line anywhere.
verify_rpm() (
    set +e -u -o pipefail
    _V_FN=verify_rpm
    _v_usage 2 2 $# "verify_rpm CERT RPM"
    local cert=$1 rpm=$2 out rc
    _v_need_files "$cert" "$rpm"
    _v_tmp
    mkdir -p "$_V_TMP/rpmdb" || _v_fail "mkdir failed"
    out=$(rpmkeys --dbpath "$_V_TMP/rpmdb" --import "$cert" 2>&1) ||
        _v_fail "rpmkeys --import $cert failed: $out"
    out=$(rpmkeys --dbpath "$_V_TMP/rpmdb" -Kv "$rpm" 2>&1)
    rc=$?
    local why=""
    if ((rc != 0)); then
        why="rpmkeys -Kv exited $rc"
    elif grep -Eq 'NOT OK|NOKEY|BAD|NOTTRUSTED' <<<"$out"; then
        why="rpmkeys reported a failed check"
    elif ! grep -Eq '^[[:space:]]*Header V4 (RSA|EdDSA)/SHA(256|384|512) Signature, key ID [0-9a-f]+: OK$' <<<"$out"; then
        why="no 'Header V4 .../SHA256 Signature, key ID ...: OK' line (unsigned?)"
    fi
    if [[ -n $why ]]; then
        printf '%s\n' "$out" >&2
        _v_fail "$why: $rpm"
    fi
)

# -------------------------------------------------------------- DEB ----

# debsig-verify looks up policies-dir/<LONGKEYID>/*.pol and
# keyrings-dir/<LONGKEYID>/<File> by the 16-hex UPPERCASE key ID of the
# deb's origin signature. One policy per signing-capable (sub)key of CERT.
verify_deb() (
    set +e -u -o pipefail
    _V_FN=verify_deb
    _v_usage 2 2 $# "verify_deb CERT DEB"
    local cert=$1 deb=$2 ids id out rc
    _v_need_files "$cert" "$deb"
    _v_tmp
    _v_gnupghome
    ids=$(gpg --batch --show-keys --with-colons "$cert" 2>/dev/null |
        awk -F: '($1 == "pub" || $1 == "sub") && $2 !~ /[rei]/ && $12 ~ /s/ { print toupper($5) }')
    [[ -n $ids ]] || _v_fail "no usable signing key in $cert"
    _v_binary_cert "$cert" "$_V_TMP/debsig.gpg"
    for id in $ids; do
        mkdir -p "$_V_TMP/policies/$id" "$_V_TMP/keyrings/$id" || _v_fail "mkdir failed"
        cp -- "$_V_TMP/debsig.gpg" "$_V_TMP/keyrings/$id/debsig.gpg" || _v_fail "cp failed"
        cat >"$_V_TMP/policies/$id/signet.pol" <<EOF || _v_fail "cannot write policy"
<?xml version="1.0"?>
<!DOCTYPE Policy SYSTEM "https://www.debian.org/debsig/1.0/policy.dtd">
<Policy xmlns="https://www.debian.org/debsig/1.0/">
  <Origin Name="signet-test" id="$id" Description="signet test key"/>
  <Selection>
    <Required Type="origin" File="debsig.gpg" id="$id"/>
  </Selection>
  <Verification MinOptional="0">
    <Required Type="origin" File="debsig.gpg" id="$id"/>
  </Verification>
</Policy>
EOF
    done
    # GNUPGHOME stays private: debsig-verify runs gpg --no-default-keyring
    # --keyring ..., but gpg still wants a home directory.
    out=$(debsig-verify --policies-dir "$_V_TMP/policies" --keyrings-dir "$_V_TMP/keyrings" "$deb" 2>&1)
    rc=$?
    if ((rc != 0)); then
        printf '%s\n' "$out" >&2
        # 10 no origin sig, 11 unknown key, 12 no policy selected, 13 bad sig
        _v_fail "debsig-verify exited $rc: $deb"
    fi
)

# -------------------------------------------------------------- gpg ----

verify_gpg() (
    set +e -u -o pipefail
    _V_FN=verify_gpg
    _v_usage 2 3 $# "verify_gpg CERT SIGFILE [DATAFILE]"
    local cert=$1 out err rc
    shift
    _v_need_files "$cert" "$@"
    _v_tmp
    _v_gnupghome
    err=$(gpg --batch --no-tty --quiet --import "$cert" 2>&1) || _v_fail "gpg --import $cert failed: $err"
    out=$(gpg --batch --no-tty --status-fd 1 --verify "$@" 2>"$_V_TMP/stderr")
    rc=$?
    if ((rc != 0)) || ! grep -q '^\[GNUPG:\] VALIDSIG ' <<<"$out"; then
        cat "$_V_TMP/stderr" >&2
        # The first BADSIG/ERRSIG/NO_PUBKEY/NODATA... status line says why.
        _v_fail "gpg --verify exited $rc without VALIDSIG: $(grep -m1 -E '^\[GNUPG:\] (BADSIG|ERRSIG|NO_PUBKEY|NODATA|EXPSIG|EXPKEYSIG|REVKEYSIG|FAILURE)' <<<"$out" || echo "no status")"
    fi
)

# -------------------------------------------------------------- sqv ----

# sqv 1.1 only knows detached signatures (no --message / clearsigned mode);
# apt splits InRelease itself before calling its verifier.
verify_sqv() (
    set +e -u -o pipefail
    _V_FN=verify_sqv
    _v_usage 3 3 $# "verify_sqv CERT SIGFILE DATAFILE (sqv 1.1 cannot verify clearsigned files)"
    local cert=$1 sig=$2 data=$3 out rc
    _v_need_files "$cert" "$sig" "$data"
    out=$(sqv --keyring "$cert" "$sig" "$data" 2>&1)
    rc=$?
    if ((rc != 0)); then
        printf '%s\n' "$out" >&2
        _v_fail "sqv exited $rc: $sig"
    fi
)

# -------------------------------------------------------- apt repo ----

# Fully private apt: APT_CONFIG is read before anything else, and it points
# Dir::Etc::parts/main away from /etc/apt, so no system apt.conf.d snippet
# (e.g. Docker's APT::Update::Post-Invoke cleaners) runs. Download methods
# keep running as root (APT::Sandbox::User "root") so REPODIR and the temp
# dir need not be readable by _apt.
verify_apt_repo() (
    set +e -u -o pipefail
    _V_FN=verify_apt_repo
    _v_usage 2 2 $# "verify_apt_repo CERT REPODIR"
    local cert=$1 repo out rc key
    _v_need_files "$cert"
    [[ -d $2 ]] || _v_fail "not a directory: $2"
    repo=$(realpath -- "$2") || _v_fail "realpath failed: $2"
    [[ $repo =~ [[:space:]] ]] && _v_fail "REPODIR path must not contain whitespace: $repo"
    _v_tmp
    local t=$_V_TMP
    mkdir -p "$t/empty" "$t/state/lists/partial" "$t/cache/archives/partial" "$t/log" ||
        _v_fail "mkdir failed"
    : >"$t/status"
    # apt only accepts an armored signed-by key if the file name ends in .asc.
    if _v_is_armored "$cert"; then key="$t/key.asc"; else key="$t/key.gpg"; fi
    cp -- "$cert" "$key" || _v_fail "cp failed"
    echo "deb [signed-by=$key] file:$repo ./" >"$t/sources.list"
    cat >"$t/apt.conf" <<EOF
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$t/empty";
Dir::Etc::sourcelist "$t/sources.list";
Dir::Etc::sourceparts "$t/empty";
Dir::Etc::trusted "$t/empty/trusted.gpg";
Dir::Etc::trustedparts "$t/empty";
Dir::Etc::preferences "$t/empty/preferences";
Dir::Etc::preferencesparts "$t/empty";
Dir::Etc::netrc "$t/empty/auth.conf";
Dir::Etc::netrcparts "$t/empty";
Dir::State "$t/state";
Dir::State::Lists "$t/state/lists";
Dir::State::status "$t/status";
Dir::Cache "$t/cache";
Dir::Log "$t/log";
APT::Sandbox::User "root";
APT::Update::Error-Mode "any";
Acquire::Languages "none";
EOF
    out=$(APT_CONFIG="$t/apt.conf" apt-get update 2>&1)
    rc=$?
    local why=""
    if ((rc != 0)); then
        why="apt-get update exited $rc"
    elif grep -Eq '^(Err:|W:|E:)' <<<"$out"; then
        why="apt-get update printed errors/warnings"
    elif ! compgen -G "$t/state/lists/*_Packages*" >/dev/null; then
        why="no Packages index in the lists dir"
    fi
    if [[ -n $why ]]; then
        printf '%s\n' "$out" >&2
        _v_fail "$why: $repo"
    fi
)

# ------------------------------------------------------- SHA256SUMS ----

verify_sha256sums() (
    set +e -u -o pipefail
    _V_FN=verify_sha256sums
    _v_usage 1 1 $# "verify_sha256sums DIR"
    local dir=$1 out
    [[ -f $dir/SHA256SUMS ]] || _v_fail "no SHA256SUMS in $dir"
    out=$(cd -- "$dir" && sha256sum -c --strict SHA256SUMS 2>&1) || {
        grep -v ': OK$' <<<"$out" >&2
        _v_fail "sha256sum -c --strict failed in $dir"
    }
)

# -------------------------------------------------------- dnf repo ----

# dnf reads only the .repo files in REPOSDIR (as `keys export --format dnf` writes
# them, with their own gpgcheck/repo_gpgcheck and gpgkey), imports the keys they
# name into a throwaway installroot, checks repomd.xml.asc (repo_gpgcheck) and the
# package's header signature (gpgcheck), and installs PACKAGE there. Nothing of
# the host (its rpmdb, /etc/yum.repos.d, /etc/dnf) is read or changed.
verify_dnf_repo() (
    set +e -u -o pipefail
    _V_FN=verify_dnf_repo
    _v_usage 2 2 $# "verify_dnf_repo REPOSDIR PACKAGE"
    local reposdir=$1 pkg=$2 out rc
    [[ -d $reposdir ]] || _v_fail "not a directory: $reposdir"
    compgen -G "$reposdir/*.repo" >/dev/null || _v_fail "no .repo file in $reposdir"
    _v_tmp
    local t=$_V_TMP
    mkdir -p "$t/root" || _v_fail "mkdir failed"
    printf '[main]\nreposdir=%s\ncachedir=%s\npersistdir=%s\nlogdir=%s\ninstall_weak_deps=0\n' \
        "$reposdir" "$t/root/cache" "$t/root/persist" "$t/root/log" >"$t/dnf.conf" || _v_fail "cannot write dnf.conf"
    out=$(dnf -c "$t/dnf.conf" --installroot="$t/root" --setopt=reposdir="$reposdir" \
        --releasever=1 --assumeyes install "$pkg" 2>&1)
    rc=$?
    if ((rc != 0)); then
        printf '%s\n' "$out" >&2
        _v_fail "dnf install $pkg exited $rc"
    fi
    rpm --root "$t/root" -q "$pkg" >/dev/null 2>&1 || _v_fail "dnf said yes but $pkg is not installed"
)

# ------------------------------------------------------- dispatcher ----

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    # Only when executed: a sourced library must not change caller options.
    set -euo pipefail
    case ${1:-} in
    verify_rpm | verify_deb | verify_gpg | verify_sqv | verify_apt_repo | verify_sha256sums | verify_dnf_repo)
        rc=0
        "$@" || rc=$?
        exit "$rc"
        ;;
    *)
        sed -n '2,/^# Every function/{/^# Every function/d;s/^# \{0,1\}//p}' "$0" >&2
        echo "verifiers.sh: unknown function '${1:-}'" >&2
        exit 2
        ;;
    esac
fi
