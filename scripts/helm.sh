#!/usr/bin/env bash
# Prints the path of a `helm` binary: the one on PATH, or one built once from the Go module proxy
# into the cache.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
CACHE="${CGO_CACHE:-$HOME/.cache/consumer-group-operator}"
log() { echo "[helm] $*" >&2; }

if path=$(command -v helm 2>/dev/null); then
  echo "$path"
  exit 0
fi
dest="$CACHE/helm-$HELM_VERSION/helm"
if [[ ! -x "$dest" ]]; then
  # Parallel callers (test threads, `make demo` beside `make test`) wait for one build.
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.helm-$HELM_VERSION.lock"
  flock 9
  # Go caches of this build only, removed once helm exists (see kube-assets.sh).
  go_caches="$CACHE/build/go-helm"
  export GOMODCACHE="$go_caches/mod" GOCACHE="$go_caches/build"
  trap 'if [[ -x "$dest" ]]; then chmod -R u+w "$go_caches" 2>/dev/null; rm -rf "$go_caches"; fi' EXIT
fi
if [[ ! -x "$dest" ]]; then
  command -v go >/dev/null || { log "Go is required to build helm (or put helm on PATH)"; exit 1; }
  work="$CACHE/build/helm-$HELM_VERSION"
  mkdir -p "$work" "$(dirname "$dest")"
  log "building helm $HELM_VERSION from the Go module proxy (once; cached in $dest)"
  (
    cd "$work"
    printf 'module cgo.local/helmbuild\n\ngo 1.24\n' >go.mod
    go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$dest.tmp" helm.sh/helm/v3/cmd/helm
    mv "$dest.tmp" "$dest"
  )
fi
echo "$dest"
