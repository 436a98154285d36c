#!/usr/bin/env bash
# Provision CRIU >= 4.2 and a matching pycriu source tree.
#
# Debian 12's criu (3.17) dies on current kernels, and 4.1 cannot dump inet
# sockets on kernels >= 6.16 (see HOST-NOTES). So: keep a working system criu
# when it is new enough and the host lets it work unpatched, otherwise build the
# newest >= 4.2 source package from Debian unstable/testing, with ferry's
# patches (scripts/criu-patches), into /usr/local/sbin. Never fall back to an
# older one.
#
# Leaves /var/cache/ferry/criu/pycriu-path (the pycriu source dir for pip) and
# /var/cache/ferry/criu/criu-path (the binary ferry should use).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

min_version=4.2
cache=/var/cache/ferry/criu
log="$cache/build.log"
patches_dir="$(cd "$(dirname "$0")" && pwd)/criu-patches"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

say() { printf 'setup: criu: %s\n' "$*"; }
die() { printf 'setup: criu: error: %s\n' "$*" >&2; exit 1; }

# Prints the version of a criu binary that is >= $min_version and passes `criu check`.
working_version() {
    local bin="$1" ver
    [ -x "$bin" ] || return 1
    ver="$("$bin" --version 2>/dev/null | awk '/^Version:/ {print $2}')"
    [ -n "$ver" ] && dpkg --compare-versions "$ver" ge "$min_version" || return 1
    "$bin" check >/dev/null 2>&1 || return 1
    echo "$ver"
}

pycriu_ready() { [ -f "$1/pycriu/rpc_pb2.py" ] && [ -f "$1/pyproject.toml" ]; }

# ferry's patches matter most without CAP_SYS_RESOURCE (see the patch headers); the
# third hardens what checkpoint/imagecheck.py already refuses, so a host that keeps
# its own CRIU loses nothing ferry relies on.
has_cap_sys_resource() {
    local eff
    eff="$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
    (( (16#$eff >> 24) & 1 ))
}

fingerprint="$(cat "$patches_dir"/*.patch 2>/dev/null | sha256sum | cut -c1-12)"
mkdir -p "$cache"
current="$(command -v criu || true)"
current_version="$(working_version "$current" || true)"
recorded="$(cat "$cache/pycriu-path" 2>/dev/null || true)"
ours_installed=false
if [ "$current" = /usr/local/sbin/criu ] && [ "$(cat "$cache/installed-build" 2>/dev/null)" = "$current_version-$fingerprint" ]; then
    ours_installed=true
fi
good_enough=false
if [ -n "$current_version" ] && { $ours_installed || has_cap_sys_resource; }; then
    good_enough=true
fi
if $good_enough && [ -n "$recorded" ] && pycriu_ready "$recorded"; then
    echo "$current" > "$cache/criu-path"
    exit 0
fi

ensure_debs build-essential patch pkgconf libbsd-dev libcap-dev libgnutls28-dev libnet1-dev \
    libnftables-dev libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler \
    protobuf-compiler uuid-dev python3-protobuf

# A private apt configuration that only knows the deb-src lines, so the host's
# own sources stay untouched.
apt_root="$cache/apt"
mkdir -p "$apt_root/sources" "$apt_root/lists/partial"
cat > "$apt_root/sources/criu-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: unstable testing
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$apt_root/sources"
          -o "Dir::State::Lists=$apt_root/lists" -o APT::Sandbox::User=root)
say "looking up CRIU source packages in Debian unstable and testing"
apt-get "${apt_opts[@]}" update -qq || die "could not read Debian's source indexes (unstable, testing)"

mapfile -t candidates < <(apt-cache "${apt_opts[@]}" showsrc criu 2>/dev/null \
    | awk '/^Version:/ {print $2}' | sort -u -r -V)
usable=()
for v in "${candidates[@]}"; do
    dpkg --compare-versions "$v" ge "$min_version" && usable+=("$v")
done
[ ${#usable[@]} -gt 0 ] || die "no CRIU source >= $min_version in Debian unstable or testing (found: ${candidates[*]:-none}); Debian 12's 3.17 does not work on this kernel, so ferry cannot checkpoint"

reasons=()
for debver in "${usable[@]}"; do
    upstream="${debver%-*}"
    upstream="${upstream#*:}"
    srcdir="$cache/src/$debver"
    tree="$cache/build/criu-$upstream-$fingerprint"
    mkdir -p "$srcdir" "$cache/build"
    say "fetching criu $debver source"
    # The .debian.tar.xz is sometimes gone (404); the orig tarball is all we build.
    (cd "$srcdir" && apt-get "${apt_opts[@]}" source --download-only -qq "criu=$debver" >"$log" 2>&1) || true
    orig="$srcdir/criu_${upstream}.orig.tar.xz"
    if [ ! -s "$orig" ]; then
        reasons+=("$debver: source download failed ($(tail -1 "$log"))")
        continue
    fi
    if [ ! -x "$tree/criu/criu" ] || ! pycriu_ready "$tree/lib"; then
        rm -rf --one-file-system "$tree" "$cache/build/criu-$upstream"
        tar -xf "$orig" -C "$cache/build"
        [ -d "$cache/build/criu-$upstream" ] || { reasons+=("$debver: tarball has no criu-$upstream/"); continue; }
        mv "$cache/build/criu-$upstream" "$tree"
        patched=true
        for patch_file in "$patches_dir"/*.patch; do
            [ -e "$patch_file" ] || continue
            if ! patch -p1 -d "$tree" --forward --quiet < "$patch_file" >>"$log" 2>&1; then
                reasons+=("$debver: ferry's patch $(basename "$patch_file") does not apply")
                patched=false
                break
            fi
        done
        $patched || continue
        say "building criu $upstream with ferry's patches (about 30 s on 2 cores; log: $log)"
        if ! make -C "$tree" -j"$(nproc)" criu lib >"$log" 2>&1; then
            reasons+=("$debver: build failed: $(grep -m1 -E 'error|Error' "$log" || tail -1 "$log")")
            continue
        fi
    fi
    if ! $good_enough; then
        make -C "$tree" install-criu PREFIX=/usr/local >>"$log" 2>&1 \
            || { reasons+=("$debver: install failed (see $log)"); continue; }
        hash -r
        installed_version="$(working_version /usr/local/sbin/criu || true)"
        if [ -z "$installed_version" ]; then
            reasons+=("$debver: built, but '/usr/local/sbin/criu check' fails: $(/usr/local/sbin/criu check 2>&1 | tail -1)")
            continue
        fi
        current=/usr/local/sbin/criu
        echo "$installed_version-$fingerprint" > "$cache/installed-build"
        say "installed criu $installed_version to /usr/local/sbin"
    fi
    echo "$tree/lib" > "$cache/pycriu-path"
    echo "$current" > "$cache/criu-path"
    exit 0
done
die "no CRIU >= $min_version could be built: ${reasons[*]}"
