#!/usr/bin/env bash
# Prints the path of a kube-controller-manager matching the test apiserver, building it once from
# the Go module proxy the way scripts/kube-assets.sh builds the apiserver (a throwaway wrapper
# module pinning kubernetes' staging modules to their tags). Only the test of an HPA scaling a
# ConsumerGroup needs it (it runs the HPA controller alone), so it is built on first use, not by
# scripts/deps.sh. Progress goes to stderr; stdout is only the path.
set -euo pipefail

# The same version setting as scripts/kube-assets.sh.
KUBE_VERSION="${CGO_KUBE_VERSION:-v1.34.4}"
CACHE="${CGO_CACHE:-$HOME/.cache/consumer-group-operator}"
dest="$CACHE/kube-controller-manager-$KUBE_VERSION"
binary="$dest/kube-controller-manager"
log() { echo "[kube-controller-manager] $*" >&2; }

if [[ ! -x "$binary" ]]; then
  command -v go >/dev/null || { log "Go is required to build kube-controller-manager"; exit 1; }
  mkdir -p "$CACHE" "$dest"
  # Parallel callers wait for one build instead of racing in the same work folder.
  exec 9>"$CACHE/.kube-controller-manager-$KUBE_VERSION.lock"
  flock 9
fi
if [[ ! -x "$binary" ]]; then
  work="$CACHE/build/kcm-$KUBE_VERSION"
  go_caches="$CACHE/build/go-kcm"
  # Module and build caches of its own (several GB), removed once the binary exists.
  export GOMODCACHE="$go_caches/mod" GOCACHE="$go_caches/build"
  trap 'chmod -R u+w "$go_caches" 2>/dev/null; rm -rf "$go_caches" "$work"' EXIT
  mkdir -p "$work"
  staging_version="v0.${KUBE_VERSION#v1.}"
  log "building kube-controller-manager $KUBE_VERSION from the Go module proxy (once; cached in $dest)"
  (
    cd "$work"
    gomod_file=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module cgo.local/kcmbuild"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo
      sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod_file"
    } >go.mod
    go get "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBE_VERSION" >&2
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$binary.tmp" k8s.io/kubernetes/cmd/kube-controller-manager
    mv "$binary.tmp" "$binary"
  )
fi
echo "$binary"
