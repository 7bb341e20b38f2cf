#!/usr/bin/env bash
# Generate signet test fixtures from scratch (binaries are never committed).
#
# Usage:
#   fixtures.sh all  OUTDIR                  rpm/ deb/ files/ apt/ rpmrepo/ under OUTDIR
#   fixtures.sh rpm  OUTDIR NAME SIZE_BYTES  OUTDIR/NAME-1.0-1.noarch.rpm, uncompressed payload
#   fixtures.sh rpms OUTDIR COUNT SIZE_BYTES OUTDIR/pkg0001-1.0-1.noarch.rpm ... pkgCOUNT
#
# FIXTURE_RPM_RESERVED_SPACE=N (rpm and rpms) builds with rpm's
# __gpg_reserved_space set to N bytes (rpm's default is 4096; 0 leaves none).
#
# Prints every artifact path it made, one per line. Re-running into the same
# OUTDIR regenerates the same artifacts (idempotent). Output is unsigned:
# signing is the product's job.
set -euo pipefail

# Fixed clock, host, umask and locale so repeated runs give (near) identical
# bytes: rpmbuild and dpkg-deb honour SOURCE_DATE_EPOCH.
export SOURCE_DATE_EPOCH=1700000000
export LC_ALL=C TZ=UTC
umask 022

die() {
    echo "fixtures.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
    exit 2
}

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
    done
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Private scratch dir next to the output (same filesystem, so big payloads are
# renamed rather than copied); removed on exit.
WORK=""
cleanup() { if [[ -n $WORK ]]; then rm -rf -- "$WORK"; fi; }
trap cleanup EXIT
make_work() {
    local out=$1
    mkdir -p -- "$out"
    WORK=$(mktemp -d "$out/.fixtures-work.XXXXXX")
}

# ---------------------------------------------------------------- RPM ----

# write_spec FILE NAME SIZE: SIZE "" => one small text file; SIZE N => N bytes
# of deterministic pseudo-random (incompressible) data seeded by NAME.
# AutoReqProv off: no dependency generators to run (speed, no host leakage).
write_spec() {
    local file=$1 name=$2 size=$3 content
    if [[ -z $size ]]; then
        content="printf 'hello from %s\\n' '$name' > %{buildroot}/usr/share/$name/$name.txt"
    else
        # AES-CTR keystream: fast, incompressible, and the same for the same NAME.
        content="openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:'$name' -in /dev/zero 2>/dev/null | head -c $size > %{buildroot}/usr/share/$name/$name.bin"
    fi
    cat >"$file" <<EOF
Name: $name
Version: ${SPEC_VERSION:-1.0}
Release: 1
Summary: signet test fixture $name
License: MIT
BuildArch: noarch
AutoReqProv: no

%description
SIGNET-FIXTURE-DESCRIPTION for $name: throwaway package for signet tests.

%install
mkdir -p %{buildroot}/usr/share/$name
$content
# clamp_mtime_to_source_epoch alone left mtimes at build time here: pin them.
find %{buildroot} -exec touch -h -d @$SOURCE_DATE_EPOCH {} +

%files
/usr/share/$name
EOF
}

# run_rpmbuild TAG RPMDIR [extra rpmbuild args...] SPEC...
# Private _topdir per TAG (never ~/rpmbuild), output straight into RPMDIR with
# a flat file name, no brp-*/check-files post-install steps (nothing to strip
# in noarch data), and one OpenMP thread: its spin-waiting burnt more CPU than
# it saved on these tiny packages.
run_rpmbuild() {
    local tag=$1 rpmdir=$2
    shift 2
    local top="$WORK/rpmbuild-$tag"
    mkdir -p -- "$top" "$rpmdir"
    rpmbuild -bb --quiet --nodeps \
        --define "_topdir $top" \
        --define "_tmppath $top/tmp" \
        --define "_rpmdir $rpmdir" \
        --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --define "_buildhost signet.test" \
        --define "use_source_date_epoch_as_buildtime 1" \
        --define "clamp_mtime_to_source_epoch 1" \
        --define "__spec_install_post %{nil}" \
        --define "__check_files %{nil}" \
        --define "_build_id_links none" \
        --define "_smp_build_nthreads 1" \
        "$@" >"$top.log" 2>&1 ||
        {
            cat "$top.log" >&2
            die "rpmbuild failed"
        }
}

make_rpms_all() {
    local out=$1 name
    for name in hello world; do
        SPEC_VERSION=$([[ $name == world ]] && echo 2.0 || echo 1.0) \
            write_spec "$WORK/$name.spec" "$name" ""
    done
    run_rpmbuild all "$out/rpm" "$WORK/hello.spec" "$WORK/world.spec"
    echo "$out/rpm/hello-1.0-1.noarch.rpm"
    echo "$out/rpm/world-2.0-1.noarch.rpm"
}

# Uncompressed payload (w0.ufdio) so SIZE_BYTES of data gives a ~SIZE_BYTES
# RPM quickly: no time spent compressing incompressible bytes.
make_sized_rpms() {
    local out=$1 size=$2
    shift 2
    local name i j jobs
    jobs=$(nproc 2>/dev/null || echo 1)
    ((jobs > $#)) && jobs=$#
    local -a all=("$@") chunk pids=()
    for name in "$@"; do
        write_spec "$WORK/$name.spec" "$name" "$size"
    done
    # Few rpmbuild runs with many specs each (per-process startup dominates
    # tiny builds), one per CPU in parallel. Chunk i gets names i, i+jobs, ...
    for ((i = 0; i < jobs; i++)); do
        chunk=()
        for ((j = i; j < $#; j += jobs)); do
            chunk+=("$WORK/${all[j]}.spec")
        done
        run_rpmbuild "$i" "$out" --define "_binary_payload w0.ufdio" \
            ${FIXTURE_RPM_RESERVED_SPACE:+--define "__gpg_reserved_space $FIXTURE_RPM_RESERVED_SPACE"} "${chunk[@]}" &
        pids+=("$!")
    done
    local pid failed=0
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    ((failed == 0)) || die "rpmbuild failed"
    for name in "$@"; do
        [[ -f $out/$name-1.0-1.noarch.rpm ]] || die "missing $out/$name-1.0-1.noarch.rpm"
        echo "$out/$name-1.0-1.noarch.rpm"
    done
}

# ---------------------------------------------------------------- DEB ----

make_deb() {
    local out=$1 pkg=$2 comp=$3
    local root="$WORK/deb-$pkg"
    rm -rf -- "$root"
    mkdir -p -- "$root/DEBIAN" "$root/usr/share/$pkg"
    cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: 1.0
Architecture: all
Maintainer: Signet Tests <tests@signet.invalid>
Section: misc
Priority: optional
Description: signet test fixture $pkg
 Throwaway package for signet tests ($comp).
EOF
    printf 'hello from %s\n' "$pkg" >"$root/usr/share/$pkg/$pkg.txt"
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    mkdir -p -- "$out/deb"
    dpkg-deb --root-owner-group "-Z$comp" --build "$root" "$out/deb/${pkg}_1.0_all.deb" >/dev/null
    echo "$out/deb/${pkg}_1.0_all.deb"
}

# -------------------------------------------------------------- files ----

make_tarball() {
    local out=$1 src="$WORK/tar/hello-1.0"
    mkdir -p -- "$src" "$out/files"
    printf 'hello 1.0: a tiny release tarball for signet tests\n' >"$src/README"
    printf '#!/bin/sh\necho hello\n' >"$src/hello.sh"
    chmod 755 "$src/hello.sh"
    # Reproducible tar: sorted, fixed mtime/owner; gzip -n drops name+time.
    tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 \
        --numeric-owner --format=gnu -C "$WORK/tar" -cf - hello-1.0 |
        gzip -9n >"$out/files/hello-1.0.tar.gz"
    echo "$out/files/hello-1.0.tar.gz"
}

# ---------------------------------------------------------- APT repo ----

# Flat repository ("deb file:DIR ./"). Release is UNSIGNED on purpose.
make_apt_repo() {
    local out=$1 repo="$1/apt"
    rm -rf -- "$repo"
    mkdir -p -- "$repo"
    cp -- "$out/deb/hello_1.0_all.deb" "$repo/"
    (cd "$repo" && apt-ftparchive packages . >Packages)
    gzip -9nkf "$repo/Packages"
    # Written outside the repo then moved, so Release never hashes itself.
    # apt-ftparchive writes an RFC 1123 Date ("Tue, 14 Nov 2023 22:13:20 UTC").
    (cd "$repo" && apt-ftparchive \
        -o APT::FTPArchive::Release::Origin=Signet \
        -o APT::FTPArchive::Release::Label="Signet Test" \
        -o APT::FTPArchive::Release::Suite=stable \
        -o APT::FTPArchive::Release::Codename=signet-test \
        -o APT::FTPArchive::Release::Description="signet test fixture repository" \
        -o APT::FTPArchive::Release::MD5=false \
        -o APT::FTPArchive::Release::SHA1=false \
        -o APT::FTPArchive::Release::SHA256=true \
        -o APT::FTPArchive::Release::SHA512=false \
        release .) >"$WORK/Release"
    mv -- "$WORK/Release" "$repo/Release"
    grep -Eq '^Date: [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} (UTC|GMT|[+-][0-9]{4})$' "$repo/Release" ||
        die "Release has no RFC 1123 Date"
    grep -q '^SHA256:' "$repo/Release" || die "Release has no SHA256 sums"
    printf '%s\n' "$repo/hello_1.0_all.deb" "$repo/Packages" "$repo/Packages.gz" "$repo/Release"
}

# ---------------------------------------------------------- RPM repo ----

make_rpm_repo() {
    local out=$1 repo="$1/rpmrepo"
    rm -rf -- "$repo"
    mkdir -p -- "$repo"
    cp -- "$out/rpm/hello-1.0-1.noarch.rpm" "$out/rpm/world-2.0-1.noarch.rpm" "$repo/"
    # primary.xml records each RPM's file mtime: pin it.
    touch -d "@$SOURCE_DATE_EPOCH" "$repo"/*.rpm
    # Fixed revision/timestamps so repomd.xml is stable across runs.
    createrepo_c --quiet --revision "$SOURCE_DATE_EPOCH" --set-timestamp-to-revision "$repo" >/dev/null
    [[ -f $repo/repodata/repomd.xml ]] || die "createrepo_c made no repomd.xml"
    printf '%s\n' "$repo/hello-1.0-1.noarch.rpm" "$repo/world-2.0-1.noarch.rpm" "$repo/repodata/repomd.xml"
}

# --------------------------------------------------------------- main ----

main() {
    [[ $# -ge 2 ]] || usage
    local mode=$1 out=$2
    case $mode in
    all)
        [[ $# -eq 2 ]] || usage
        need rpmbuild dpkg-deb apt-ftparchive createrepo_c gzip tar
        make_work "$out"
        make_rpms_all "$out"
        make_deb "$out" hello xz
        make_deb "$out" hello-gz gzip
        make_deb "$out" hello-zst zstd
        make_tarball "$out"
        make_apt_repo "$out"
        make_rpm_repo "$out"
        ;;
    rpm)
        [[ $# -eq 4 ]] || usage
        [[ $3 =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "bad package name: $3"
        is_uint "$4" || die "SIZE_BYTES must be a non-negative integer: $4"
        need rpmbuild openssl
        make_work "$out"
        make_sized_rpms "$out" "$4" "$3"
        ;;
    rpms)
        [[ $# -eq 4 ]] || usage
        if ! is_uint "$3" || ((10#$3 < 1 || 10#$3 > 9999)); then
            die "COUNT must be 1..9999: $3"
        fi
        is_uint "$4" || die "SIZE_BYTES must be a non-negative integer: $4"
        need rpmbuild openssl
        make_work "$out"
        local i names=()
        for ((i = 1; i <= 10#$3; i++)); do
            names+=("$(printf 'pkg%04d' "$i")")
        done
        make_sized_rpms "$out" "$4" "${names[@]}"
        ;;
    *) usage ;;
    esac
}

main "$@"
