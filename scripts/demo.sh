#!/usr/bin/env bash
# `make demo`: the seed scenario as far as ferry goes today. It uses its own
# state root, so it never touches containers in /var/lib/ferry.
set -euo pipefail

root="${FERRY_DEMO_ROOT:-/var/lib/ferry-demo}"
port="${FERRY_DEMO_PORT:-8080}"
ferry=(ferry --root "$root")

step() { printf '\n== %s\n' "$*"; }
timed() {
    local start=$EPOCHREALTIME
    "$@"
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "   (%.2f s)\n", b - a }'
}
cleanup() { "${ferry[@]}" rm -f my-nginx >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "ferry system check: can this host checkpoint and restore containers?"
ferry system check

step "ferry image build-debian nginx --include nginx-light (cached after the first build)"
timed "${ferry[@]}" image build-debian nginx --include nginx-light -q
"${ferry[@]}" images

cleanup
step "ferry run -d -p $port:80 --name my-nginx nginx"
timed "${ferry[@]}" run -d -p "$port:80" --name my-nginx nginx
"${ferry[@]}" ps

step "curl http://localhost:$port/"
for _ in $(seq 50); do curl -fsS "http://localhost:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://localhost:$port/" | grep -i -m1 '<title>'

step "ferry stop my-nginx; ferry rm my-nginx"
timed "${ferry[@]}" stop my-nginx
timed "${ferry[@]}" rm my-nginx
trap - EXIT
"${ferry[@]}" ps -a
echo
echo "demo finished: nginx ran in a ferry container, served on :$port, and was removed."
