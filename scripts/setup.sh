#!/usr/bin/env bash
# Idempotent machine setup for ferry on Debian 12, run as root by `make setup`.
# Each step checks first and does nothing when its work is already done, so a
# second run costs seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.venv"
# Debian's interpreter, not whatever python3 is first on PATH: /usr/local/bin/ferry
# must keep working for root on any shell.
python=/usr/bin/python3

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (ferry manages namespaces, mounts and CRIU); try: sudo make setup"
[ -r /etc/debian_version ] || die "this setup targets Debian 12; /etc/debian_version is missing"

# Run-time tools ferry drives (containers-common brings podman's seccomp
# profile; pigz is parallel gzip for archives; age encrypts them; catatonit is --init's init,
# which Debian's podman only recommends), what builds the virtualenv,
# and what the tests and the demo compare with or talk to (a real registry,
# podman, htpasswd, curl; gcc and libc6-dev build the static lock holder of the file-lock tests).
runtime_pkgs=(runc iproute2 nftables busybox-static debootstrap util-linux procps
              golang-github-containers-common pigz age catatonit
              python3 python3-venv ca-certificates xz-utils curl
              docker-registry podman buildah apache2-utils gcc libc6-dev)
ensure_debs "${runtime_pkgs[@]}"

bash "$repo/scripts/provision-criu.sh"
pycriu_dir="$(cat /var/cache/ferry/criu/pycriu-path)"

# The virtualenv is rebuilt only when pyproject.toml or the CRIU build changed.
stamp="$venv/.ferry-setup"
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1) $pycriu_dir"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "creating virtualenv $venv"
    rm -rf --one-file-system "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip setuptools wheel
    "$venv/bin/pip" install -q --disable-pip-version-check -e "$repo[test]"
    # pycriu comes from the same CRIU source as the criu binary, so its RPC
    # messages match. Its build reads its version through protobuf, which the
    # line above installed.
    if ! "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation "$pycriu_dir" \
            >"$venv/pycriu-install.log" 2>&1; then
        cat "$venv/pycriu-install.log" >&2
        die "could not install pycriu from $pycriu_dir"
    fi
    echo "$want" > "$stamp"
fi

# Byte-compile ferry now: a shell with PYTHONDONTWRITEBYTECODE set would
# otherwise recompile every module on every command (50 ms on `ferry ps`).
"$venv/bin/python" -m compileall -q "$repo/src" >/dev/null

if [ "$(readlink /usr/local/bin/ferry 2>/dev/null)" != "$venv/bin/ferry" ]; then
    ln -sfn "$venv/bin/ferry" /usr/local/bin/ferry
    say "linked /usr/local/bin/ferry -> $venv/bin/ferry"
fi
criu="$(cat /var/cache/ferry/criu/criu-path)"
say "ready: $criu $("$criu" --version | awk '/^Version:/ {print $2}'), $(runc --version | head -1)"
