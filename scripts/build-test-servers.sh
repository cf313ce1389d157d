#!/usr/bin/env bash
# Builds the servers the integration tests start and Debian does not package (Nomad, Consul)
# or packages too old (nats-server 2.10), from their Go modules into ~/.cache/caravan/bin.
# Each build is skipped when the cached binary already has its version. Run by .ci/run and by
# .github/workflows/ci.yml (which restores ~/.cache/caravan/bin from its cache first, keyed on
# the build scripts, which hold the versions).
set -euo pipefail
cd "$(dirname "$0")/.."

# Nomad and Consul are not packaged by Debian or npm: build them from their Go modules once,
# cached in ~/.cache/caravan/bin (a few minutes each the first time).
if ! command -v nomad >/dev/null 2>&1; then
  bash scripts/build-nomad.sh
fi
if ! command -v consul >/dev/null 2>&1; then
  bash scripts/build-consul.sh
fi
# The NATS tests also run against a 2.10 server (Debian's is 2.9), built from its Go module
# into the same cache (seconds once the modules are downloaded).
bash scripts/build-nats-server.sh
