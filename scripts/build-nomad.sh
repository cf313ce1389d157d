#!/usr/bin/env bash
# Builds the Nomad test binary from its Go module into ~/.cache/caravan/bin (once; cached).
#
# Nomad v1.6.3 is the newest MPL-2.0 release the Go module proxy serves here (v1.6.4 and
# v1.6.5 answer 403; 1.7+ is BUSL). `go install` refuses Nomad because its go.mod has replace
# directives (nomad/api => ./api), so a wrapper module requires it, repeats its replaces, and
# pins nomad/api to the pseudo-version of the same commit (e0497bf, 2023-10-30 12:58:10 UTC).
set -euo pipefail
VERSION=v1.6.3
API=v0.0.0-20231030125810-e0497bff1437
BIN="${CARAVAN_BIN_DIR:-$HOME/.cache/caravan/bin}"
# Read the whole version output first: with pipefail, `grep -q` closing the pipe early
# would make the check fail and rebuild for nothing.
have="$("$BIN/nomad" version 2>/dev/null || true)"
if [ -x "$BIN/nomad" ] && [[ "$have" == *"Nomad ${VERSION}"* ]]; then
  echo "nomad ${VERSION} already built: $BIN/nomad"
  exit 0
fi
command -v go >/dev/null || { echo "build-nomad: Go is required (https://go.dev/dl or the go module proxy toolchain)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/go.mod" <<MOD
module caravan.local/nomadbuild

go 1.21

require (
	github.com/hashicorp/nomad ${VERSION}
	github.com/hashicorp/nomad/api ${API}
)

replace (
	github.com/Microsoft/go-winio => github.com/endocrimes/go-winio v0.4.13-0.20190628114223-fb47a8b41948
	github.com/hashicorp/hcl => github.com/hashicorp/hcl v1.0.1-0.20201016140508-a07e7d50bbee
)

replace github.com/armon/go-metrics => github.com/armon/go-metrics v0.0.0-20230509193637-d9ca9af9f1f9
MOD
cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/hashicorp/nomad"
GO
mkdir -p "$BIN"
cd "$work"
echo "building nomad ${VERSION} (several minutes on 2 cores)..."
GOFLAGS=-mod=mod go mod tidy
# Old dependencies use //go:linkname into the runtime; newer toolchains refuse that by default.
GOFLAGS=-mod=mod go build -trimpath -ldflags=-checklinkname=0 -o "$BIN/nomad" github.com/hashicorp/nomad
"$BIN/nomad" version
