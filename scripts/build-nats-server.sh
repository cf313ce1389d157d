#!/usr/bin/env bash
# Builds a newer nats-server than Debian's (2.9) from its Go module into
# ~/.cache/caravan/bin/nats-server-v2.10/ (once; cached), so the NATS tests also run against
# a 2.10 server: from 2.10 on, the server refuses to create a consumer whose config differs
# from an existing one instead of updating it, and other behaviour moved too.
set -euo pipefail
VERSION=v2.10.22
dir="${CARAVAN_BIN_DIR:-$HOME/.cache/caravan/bin}/nats-server-v2.10"
if [ -x "$dir/nats-server" ] && [[ "$("$dir/nats-server" --version 2>/dev/null || true)" == *"$VERSION"* ]]; then
  echo "nats-server $VERSION already built: $dir/nats-server"
  exit 0
fi
command -v go >/dev/null || { echo "build-nats-server: Go is required" >&2; exit 1; }
mkdir -p "$dir"
echo "building nats-server $VERSION..."
GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/nats-io/nats-server/v2@$VERSION"
"$dir/nats-server" --version
