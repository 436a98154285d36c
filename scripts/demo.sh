#!/usr/bin/env bash
# `make demo`: what ferry can do on this machine today. Later issues grow this
# into the seed scenario (run nginx, checkpoint to a file, restore under a new name).
set -euo pipefail
echo "== ferry system check: can this host checkpoint and restore containers?"
ferry system check
