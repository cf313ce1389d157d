#!/usr/bin/env bash
# Builds the Nomad test binary from its Go module into ~/.cache/caravan/bin (once; cached).
#
# Nomad v1.6.3 is the newest MPL-2.0 release the Go module proxy serves here (v1.6.4 and
# v1.6.5 answer 403; 1.7+ is BUSL). `go install` refuses Nomad because its go.mod has replace
# directives (nomad/api => ./api), so a wrapper module requires it, repeats its replaces, and
# pins nomad/api to the pseudo-version of the same commit (e0497bf, 2023-10-30 12:58:10 UTC).
set -euo pipefail
. "$(dirname "$0")/go-server-build.sh"
VERSION=v1.6.3
API=v0.0.0-20231030125810-e0497bff1437
build_go_server nomad Nomad "$VERSION" github.com/hashicorp/nomad "module caravan.local/nomadbuild

go 1.21

require (
	github.com/hashicorp/nomad ${VERSION}
	github.com/hashicorp/nomad/api ${API}
)

replace (
	github.com/Microsoft/go-winio => github.com/endocrimes/go-winio v0.4.13-0.20190628114223-fb47a8b41948
	github.com/hashicorp/hcl => github.com/hashicorp/hcl v1.0.1-0.20201016140508-a07e7d50bbee
)

replace github.com/armon/go-metrics => github.com/armon/go-metrics v0.0.0-20230509193637-d9ca9af9f1f9"
