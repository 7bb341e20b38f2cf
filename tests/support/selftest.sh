#!/usr/bin/env bash
# Self-test for fixtures.sh + verifiers.sh, independent of signet: sign the
# fixtures with the distro's own tools (rpmsign, debsigs, gpg) using throwaway
# RSA-4096 and Ed25519 keys, then check that every verifier ACCEPTS the signed
# artifact and REJECTS (a) the unsigned artifact, (b) a copy with one byte
# flipped, (c) verification against the other key's cert.
#
# Usage: selftest.sh [-v]     (-v: show each rejection's reason)
# KEEP=1 keeps the temp dir for inspection.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=verifiers.sh
source "$HERE/verifiers.sh"

VERBOSE=0
[[ ${1:-} == -v ]] && VERBOSE=1
export LC_ALL=C

T=$(mktemp -d "${TMPDIR:-/tmp}/signet-selftest.XXXXXX")
# Signing keys live only here; verifiers make their own homes.
export GNUPGHOME="$T/gnupg"
mkdir -m 700 "$GNUPGHOME"
cleanup() {
    gpgconf --kill all >/dev/null 2>&1 || true # our private agent only
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $T"; else rm -rf -- "$T"; fi
}
trap cleanup EXIT

START=$(date +%s.%N)
PASS=0
FAIL=0
NOTES=()

# elapsed SINCE: seconds since a `date +%s.%N` stamp.
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

ok() { echo "ok   - $*"; PASS=$((PASS + 1)); }
notok() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }

# expect_ok DESC CMD...: CMD must succeed.
expect_ok() {
    local desc=$1 rc=0
    shift
    "$@" 2>"$T/err" || rc=$?
    if ((rc == 0)); then ok "$desc"; else
        notok "$desc (rc=$rc)"
        sed 's/^/       | /' "$T/err"
    fi
}

# expect_bad DESC CMD...: CMD must fail; its last stderr line is the reason.
expect_bad() {
    local desc=$1 rc=0
    shift
    "$@" 2>"$T/err" || rc=$?
    if ((rc != 0)); then
        ok "$desc (rejected, rc=$rc)"
        if ((VERBOSE)); then tail -n 1 "$T/err" | sed 's/^/       > /'; fi
    else
        notok "$desc (ACCEPTED)"
    fi
}

# flip_byte FILE OFFSET: XOR one byte with 0xff in place.
flip_byte() {
    local file=$1 off=$2 byte
    byte=$(od -An -tu1 -j "$off" -N1 -- "$file" | tr -d ' ')
    [[ -n $byte ]] || { echo "flip_byte: offset $off beyond $file" >&2; return 1; }
    printf '%b' "\\0$(printf '%03o' $((byte ^ 0xff)))" |
        dd of="$file" bs=1 seek="$off" conv=notrunc status=none
}

# ar_member FILE PREFIX: prints "DATA_OFFSET SIZE" of the first ar member
# whose name starts with PREFIX (60-byte headers, 2-byte alignment).
ar_member() {
    local file=$1 prefix=$2 off=8 total hdr name size
    total=$(stat -c %s -- "$file")
    while ((off + 60 <= total)); do
        hdr=$(dd if="$file" bs=1 skip="$off" count=60 status=none)
        name=${hdr:0:16}
        name=${name%% *}
        size=${hdr:48:10}
        size=${size%% *}
        if [[ $name == "$prefix"* ]]; then
            echo "$((off + 60)) $size"
            return 0
        fi
        off=$((off + 60 + size + size % 2))
    done
    return 1
}

# tampered SRC OFFSET: path of a copy of SRC with the byte at OFFSET flipped.
tampered() {
    local dst
    dst="$T/tampered/$(basename -- "$(dirname -- "$1")")-$(basename -- "$1").$2"
    mkdir -p "$T/tampered"
    cp -- "$1" "$dst"
    flip_byte "$dst" "$2"
    echo "$dst"
}

gen_key() { # NAME  (rsa => RSA-4096, otherwise Ed25519)
    local name=$1 algo
    if [[ $name == rsa ]]; then
        algo=$'Key-Type: RSA\nKey-Length: 4096'
    else
        algo=$'Key-Type: EDDSA\nKey-Curve: ed25519'
    fi
    gpg --batch --quiet --gen-key 2>>"$T/keygen.log" <<EOF
%no-protection
$algo
Key-Usage: sign
Name-Real: Signet Selftest $name
Name-Email: $name@signet.invalid
Expire-Date: 0
%commit
EOF
    FPR[$name]=$(gpg --with-colons --list-secret-keys "<$name@signet.invalid>" 2>>"$T/keygen.log" |
        awk -F: '$1 == "fpr" { print $10; exit }')
    gpg --armor --export "${FPR[$name]}" >"$T/$name.asc"
}

echo "# fixtures"
FX="$T/fx"
"$HERE/fixtures.sh" all "$FX" >/dev/null

echo "# keys"
declare -A FPR OTHER=([rsa]=ed25519 [ed25519]=rsa)
t0=$(date +%s.%N)
gen_key rsa
gen_key ed25519
echo "# keygen took $(elapsed "$t0") s"

# debsigs runs `gpg --openpgp --detach-sign`; --openpgp makes gpg pick SHA1
# for RSA keys, and debsig-verify 0.28 rejects SHA1 ("Note: signatures using
# the SHA1 algorithm are rejected"). Record that once, then make our signing
# gpg prefer SHA-2 (gpg.conf survives --openpgp; debsigs' -g is ignored).
cp "$FX/deb/hello_1.0_all.deb" "$T/sha1-probe.deb"
debsigs --sign=origin -k "${FPR[rsa]}" "$T/sha1-probe.deb" 2>/dev/null
if verify_deb "$T/rsa.asc" "$T/sha1-probe.deb" 2>/dev/null; then
    NOTES+=("debsigs+RSA with default gpg.conf: verify_deb accepts")
else
    NOTES+=("debsigs+RSA with default gpg.conf: $(ar p "$T/sha1-probe.deb" _gpgorigin |
        gpg --list-packets 2>/dev/null | grep -o 'digest algo [0-9]*' | head -n 1) (2=SHA1), verify_deb REJECTS")
fi
echo "personal-digest-preferences SHA512 SHA384 SHA256" >"$GNUPGHOME/gpg.conf"

# debsig_manual DEB FPR: origin-sign like debsigs, but over whatever
# control/data members exist (incl. .zst): sig over debian-binary+control+data.
debsig_manual() {
    local deb=$1 fpr=$2 x
    x=$(mktemp -d "$T/ar.XXXXXX")
    (
        cd "$x"
        ar x "$deb"
        cat debian-binary control.tar* data.tar* |
            gpg --batch --local-user "$fpr" --detach-sign -o _gpgorigin
        ar q "$deb" _gpgorigin
    )
}

for k in rsa ed25519; do
    fpr=${FPR[$k]}
    cert="$T/$k.asc"
    wrong="$T/${OTHER[$k]}.asc"
    d="$T/signed-$k"
    mkdir -p "$d"
    echo "# ---- key $k ($fpr)"

    # ---------------------------------------------------------- RPM ----
    rpm="$d/hello-1.0-1.noarch.rpm"
    cp "$FX/rpm/hello-1.0-1.noarch.rpm" "$rpm"
    rpmsign --addsign --define "_gpg_name $fpr" --define "__gpg /usr/bin/gpg" "$rpm" >"$T/rpmsign.log" 2>&1 ||
        {
            cat "$T/rpmsign.log"
            notok "rpmsign $k"
        }
    expect_ok "verify_rpm $k signed" verify_rpm "$cert" "$rpm"
    expect_bad "verify_rpm $k unsigned" verify_rpm "$cert" "$FX/rpm/hello-1.0-1.noarch.rpm"
    # Flip a letter of %description: it sits in the main header's data store,
    # which the header signature and header SHA256 digest cover, and the
    # header still parses (a flipped index entry would fail earlier).
    off=$(grep -obUa 'SIGNET-FIXTURE-DESCRIPTION' "$rpm" | head -n 1 | cut -d: -f1)
    expect_bad "verify_rpm $k header byte @$((off + 2)) flipped" verify_rpm "$cert" "$(tampered "$rpm" $((off + 2)))"
    # Last byte = payload: header sig stays OK, payload digest must catch it.
    size=$(stat -c %s "$rpm")
    expect_bad "verify_rpm $k payload last byte flipped" verify_rpm "$cert" "$(tampered "$rpm" $((size - 1)))"
    expect_bad "verify_rpm $k wrong cert" verify_rpm "$wrong" "$rpm"

    # ---------------------------------------------------------- DEB ----
    for deb in hello_1.0_all.deb hello-gz_1.0_all.deb; do
        cp "$FX/deb/$deb" "$d/$deb"
        debsigs --sign=origin -k "$fpr" "$d/$deb" >"$T/debsigs.log" 2>&1 ||
            {
                cat "$T/debsigs.log"
                notok "debsigs $k $deb"
            }
        expect_ok "verify_deb $k $deb signed" verify_deb "$cert" "$d/$deb"
        expect_bad "verify_deb $k $deb unsigned" verify_deb "$cert" "$FX/deb/$deb"
        # Last byte of the data.tar member (the _gpgorigin member follows it).
        read -r moff msize < <(ar_member "$d/$deb" data.tar)
        expect_bad "verify_deb $k $deb data.tar last byte flipped" \
            verify_deb "$cert" "$(tampered "$d/$deb" $((moff + msize - 1)))"
        expect_bad "verify_deb $k $deb wrong cert" verify_deb "$wrong" "$d/$deb"
    done
    # zstd: debsigs 0.1.26 only matches control.tar(.gz|.xz) and
    # data.tar(.gz|.xz|.bz2|.lzma): record what it does instead of asserting.
    zst="$d/debsigs-hello-zst_1.0_all.deb"
    cp "$FX/deb/hello-zst_1.0_all.deb" "$zst"
    if debsigs --sign=origin -k "$fpr" "$zst" >"$T/zst.log" 2>&1; then
        if verify_deb "$cert" "$zst" 2>"$T/zst.err"; then
            NOTES+=("$k: debsigs on .zst deb: verify_deb ACCEPTS it")
        else
            x=$(mktemp -d "$T/ar.XXXXXX")
            (cd "$x" && ar x "$zst")
            covers=none
            if gpg --batch --verify "$x/_gpgorigin" "$x/debian-binary" 2>/dev/null; then covers=debian-binary-only; fi
            NOTES+=("$k: debsigs on .zst deb exits 0, its _gpgorigin covers: $covers; verify_deb: $(grep -o 'exited [0-9]*' "$T/zst.err")")
        fi
    else
        NOTES+=("$k: debsigs on .zst deb FAILED: $(tail -n 1 "$T/zst.log")")
    fi
    # A correctly origin-signed zstd deb: debsig-verify 0.28 must accept it.
    zst="$d/hello-zst_1.0_all.deb"
    cp "$FX/deb/hello-zst_1.0_all.deb" "$zst"
    debsig_manual "$zst" "$fpr"
    expect_ok "verify_deb $k hello-zst (manual origin sig) signed" verify_deb "$cert" "$zst"
    expect_bad "verify_deb $k hello-zst unsigned" verify_deb "$cert" "$FX/deb/hello-zst_1.0_all.deb"
    read -r moff msize < <(ar_member "$zst" data.tar)
    expect_bad "verify_deb $k hello-zst data.tar last byte flipped" \
        verify_deb "$cert" "$(tampered "$zst" $((moff + msize - 1)))"
    expect_bad "verify_deb $k hello-zst wrong cert" verify_deb "$wrong" "$zst"

    # ------------------------------------------ detached signature ----
    tgz="$d/hello-1.0.tar.gz"
    cp "$FX/files/hello-1.0.tar.gz" "$tgz"
    gpg --batch --yes --local-user "$fpr" --detach-sign --armor -o "$tgz.asc" "$tgz"
    : >"$d/empty.asc"
    size=$(stat -c %s "$tgz")
    bad_tgz=$(tampered "$tgz" $((size - 1)))
    for v in verify_gpg verify_sqv; do
        expect_ok "$v $k detached .asc" "$v" "$cert" "$tgz.asc" "$tgz"
        expect_bad "$v $k no signature (empty sig file)" "$v" "$cert" "$d/empty.asc" "$tgz"
        expect_bad "$v $k data last byte flipped" "$v" "$cert" "$tgz.asc" "$bad_tgz"
        expect_bad "$v $k wrong cert" "$v" "$wrong" "$tgz.asc" "$tgz"
    done

    # ------------------------------------------------ APT metadata ----
    repo="$d/apt"
    cp -r "$FX/apt" "$repo"
    gpg --batch --yes --local-user "$fpr" --clearsign -o "$repo/InRelease" "$repo/Release"
    gpg --batch --yes --local-user "$fpr" -abs -o "$repo/Release.gpg" "$repo/Release"
    expect_ok "verify_gpg $k InRelease" verify_gpg "$cert" "$repo/InRelease"
    expect_ok "verify_gpg $k Release.gpg" verify_gpg "$cert" "$repo/Release.gpg" "$repo/Release"
    expect_ok "verify_sqv $k Release.gpg" verify_sqv "$cert" "$repo/Release.gpg" "$repo/Release"
    expect_bad "verify_sqv $k InRelease (2 args: unsupported)" verify_sqv "$cert" "$repo/InRelease"
    expect_bad "verify_gpg $k unsigned Release" verify_gpg "$cert" "$FX/apt/Release"
    # Flip a hex digit in the last signed line (just before the armor).
    off=$(grep -obUa -- '-----BEGIN PGP SIGNATURE-----' "$repo/InRelease" | cut -d: -f1)
    expect_bad "verify_gpg $k InRelease body byte @$((off - 5)) flipped" \
        verify_gpg "$cert" "$(tampered "$repo/InRelease" $((off - 5)))"
    size=$(stat -c %s "$repo/Release")
    bad_release=$(tampered "$repo/Release" $((size - 5)))
    expect_bad "verify_gpg $k Release byte flipped" verify_gpg "$cert" "$repo/Release.gpg" "$bad_release"
    expect_bad "verify_sqv $k Release byte flipped" verify_sqv "$cert" "$repo/Release.gpg" "$bad_release"
    expect_bad "verify_gpg $k InRelease wrong cert" verify_gpg "$wrong" "$repo/InRelease"

    # ---------------------------------------------------- APT repo ----
    expect_ok "verify_apt_repo $k signed (InRelease+Release.gpg)" verify_apt_repo "$cert" "$repo"
    expect_bad "verify_apt_repo $k unsigned" verify_apt_repo "$cert" "$FX/apt"
    expect_bad "verify_apt_repo $k wrong cert" verify_apt_repo "$wrong" "$repo"
    # Packages changed after signing: Release's SHA256 no longer matches.
    cp -r "$repo" "$d/apt-badpkgs"
    size=$(stat -c %s "$d/apt-badpkgs/Packages")
    flip_byte "$d/apt-badpkgs/Packages" $((size - 2))
    rm "$d/apt-badpkgs/Packages.gz"
    expect_bad "verify_apt_repo $k Packages byte flipped" verify_apt_repo "$cert" "$d/apt-badpkgs"
    cp -r "$repo" "$d/apt-badinrel"
    flip_byte "$d/apt-badinrel/InRelease" $((off - 5))
    expect_bad "verify_apt_repo $k InRelease byte flipped" verify_apt_repo "$cert" "$d/apt-badinrel"
    # apt falls back to Release + Release.gpg only when InRelease is absent.
    cp -r "$repo" "$d/apt-detached"
    rm "$d/apt-detached/InRelease"
    expect_ok "verify_apt_repo $k Release.gpg only" verify_apt_repo "$cert" "$d/apt-detached"
done

# ------------------------------------------------------ SHA256SUMS ----
echo "# ---- SHA256SUMS"
s="$T/sums"
mkdir -p "$s"
cp "$FX/files/hello-1.0.tar.gz" "$FX/deb/hello_1.0_all.deb" "$s/"
(cd "$s" && sha256sum -- *.tar.gz *.deb >SHA256SUMS)
expect_ok "verify_sha256sums good" verify_sha256sums "$s"
cp -r "$s" "$T/sums-none"
rm "$T/sums-none/SHA256SUMS"
expect_bad "verify_sha256sums no SHA256SUMS" verify_sha256sums "$T/sums-none"
cp -r "$s" "$T/sums-flip"
size=$(stat -c %s "$T/sums-flip/hello-1.0.tar.gz")
flip_byte "$T/sums-flip/hello-1.0.tar.gz" $((size - 1))
expect_bad "verify_sha256sums file byte flipped" verify_sha256sums "$T/sums-flip"
cp -r "$s" "$T/sums-junk"
echo "not a checksum line" >>"$T/sums-junk/SHA256SUMS"
expect_bad "verify_sha256sums malformed line (--strict)" verify_sha256sums "$T/sums-junk"

# ---------------------------------------------- script interface ----
expect_ok "verifiers.sh as a command" "$HERE/verifiers.sh" verify_sha256sums "$s"
expect_bad "verifiers.sh unknown function" "$HERE/verifiers.sh" rm -rf /nonexistent

echo "# ---- notes"
for n in "${NOTES[@]}"; do echo "# $n"; done
echo "# $PASS passed, $FAIL failed in $(elapsed "$START") s"
((FAIL == 0))
