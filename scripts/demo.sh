#!/usr/bin/env bash
# `make demo`: the seed scenario. Run nginx, curl it, checkpoint it to one
# archive, remove it, restore it under a new name, curl it again. It uses its
# own state root, so it never touches containers in /var/lib/ferry.
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
cleanup() { "${ferry[@]}" rm -f my-nginx my-nginx-restored >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "ferry system check: can this host checkpoint and restore containers?"
ferry system check

step "ferry image build-debian nginx --include nginx-light (cached after the first build)"
if ! "${ferry[@]}" image inspect nginx >/dev/null 2>&1; then
    timed "${ferry[@]}" image build-debian nginx --include nginx-light -q
fi
"${ferry[@]}" images

cleanup
step "ferry run -d -p $port:80 --name my-nginx nginx"
timed "${ferry[@]}" run -d -p "$port:80" --name my-nginx nginx
"${ferry[@]}" ps

step "curl http://localhost:$port/"
for _ in $(seq 50); do curl -fsS "http://localhost:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://localhost:$port/" | grep -i -m1 '<title>'

echo "hello from before the checkpoint" > /tmp/ferry-demo-note.html
"${ferry[@]}" exec -i my-nginx sh -c 'cat > /var/www/html/note.html' < /tmp/ferry-demo-note.html
rm -f /tmp/ferry-demo-note.html

archive="$root/nginx.tar.gz"
step "ferry container checkpoint my-nginx --file $archive"
timed "${ferry[@]}" container checkpoint my-nginx --file "$archive"
ls -l "$archive"

step "ferry rm my-nginx"
timed "${ferry[@]}" rm my-nginx

step "ferry container restore --name my-nginx-restored --file $archive"
timed "${ferry[@]}" container restore --name my-nginx-restored --file "$archive"
"${ferry[@]}" ps

step "curl http://localhost:$port/ (the same page) and /note.html (written before the checkpoint)"
curl -fsS "http://localhost:$port/" | grep -i -m1 '<title>'
curl -fsS "http://localhost:$port/note.html"

step "ferry rm -f my-nginx-restored"
timed "${ferry[@]}" rm -f my-nginx-restored
rm -f "$archive"
trap - EXIT
echo
echo "nginx was checkpointed to one archive, removed, and restored under a new name, still serving."

# Last act: a live migration between two simulated hosts (network namespaces).
"$(dirname "$0")/../.venv/bin/python" "$(dirname "$0")/demo_migration.py"
echo
echo "demo finished."
