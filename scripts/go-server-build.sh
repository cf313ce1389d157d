# Shared by build-nomad.sh and build-consul.sh (sourced, not run).
#
# build_go_server NAME DISPLAY VERSION MODULE GO_MOD
#   Builds MODULE (a HashiCorp server whose go.mod `go install` refuses) through a wrapper
#   module whose go.mod is GO_MOD, into $CARAVAN_BIN_DIR (default ~/.cache/caravan/bin).
#   Skips the build when the cached binary already reports "DISPLAY VERSION".
build_go_server() {
  local name="$1" display="$2" version="$3" module="$4" gomod="$5"
  local bin="${CARAVAN_BIN_DIR:-$HOME/.cache/caravan/bin}"
  # Read the whole version output first: with pipefail, `grep -q` closing the pipe early
  # would make the check fail and rebuild for nothing.
  local have
  have="$("$bin/$name" version 2>/dev/null || true)"
  if [ -x "$bin/$name" ] && [[ "$have" == *"$display $version"* ]]; then
    echo "$name $version already built: $bin/$name"
    return 0
  fi
  command -v go >/dev/null || { echo "build-$name: Go is required" >&2; return 1; }
  local work
  work="$(mktemp -d)"
  printf '%s\n' "$gomod" > "$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$module" > "$work/tools.go"
  mkdir -p "$bin"
  echo "building $name $version (several minutes on 2 cores)..."
  # Old dependencies use //go:linkname into the runtime; newer toolchains refuse that by default.
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy && GOFLAGS=-mod=mod go build -trimpath -ldflags=-checklinkname=0 -o "$bin/$name" "$module") || { rm -rf "$work"; return 1; }
  rm -rf "$work"
  "$bin/$name" version
}
