#!/usr/bin/env bash
# Builds the Consul test binary from its Go module into ~/.cache/caravan/bin (once; cached).
#
# Consul v1.16.3 is the newest MPL-2.0 release the Go module proxy serves here (v1.16.4
# answers 403; 1.17+ is BUSL). Consul's go.mod replaces its own submodules with local
# directories, which `go install` refuses, so a wrapper module requires Consul and the
# published versions of those submodules, and keeps Consul's exclude lines. The checksum
# database has no entries for several hashicorp modules (404), so it is skipped for them.
set -euo pipefail
. "$(dirname "$0")/go-server-build.sh"
VERSION=v1.16.3
export GONOSUMDB='github.com/hashicorp/*'
build_go_server consul Consul "$VERSION" github.com/hashicorp/consul "module caravan.local/consulbuild

go 1.20

require (
	github.com/hashicorp/consul ${VERSION}
	github.com/hashicorp/consul/api v1.25.1
	github.com/hashicorp/consul/envoyextensions v0.4.1
	github.com/hashicorp/consul/proto-public v0.4.1
	github.com/hashicorp/consul/sdk v0.14.1
	github.com/hashicorp/consul/troubleshoot v0.3.1
)

exclude (
	github.com/hashicorp/go-msgpack v1.1.5
	github.com/hashicorp/go-msgpack v1.1.6
)"
