#!/usr/bin/env bash
# Prints a folder holding kube-apiserver, etcd and kubectl, building them once if needed.
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS when it already holds kube-apiserver and etcd (the envtest convention);
#   2. the cache under $CGO_CACHE (default $HOME/.cache/consumer-group-operator);
#   3. a build from the Go module proxy into that cache (a few minutes on 2 cores, once).
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces every staging module with a local
# path), so a throwaway wrapper module requires it and pins each staging module to its tag.
# All progress goes to stderr; stdout is only the folder, so callers can `$(...)` it.
#
# CGO_KUBE_VERSION (default v1.34.4) and CGO_ETCD_VERSION (default v3.6.16) choose what is built;
# each pair has a cache folder of its own.
set -euo pipefail

KUBE_VERSION="${CGO_KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${CGO_ETCD_VERSION:-v3.6.16}"
CACHE="${CGO_CACHE:-$HOME/.cache/consumer-group-operator}"

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

dest="$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
log() { echo "[kube-assets] $*" >&2; }

if [[ ! -x "$dest/kube-apiserver" || ! -x "$dest/etcd" || ! -x "$dest/kubectl" || -L "$dest/kubectl" ]]; then
  # Parallel callers wait for one build instead of racing in the same work folder.
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.kube-$KUBE_VERSION-etcd-$ETCD_VERSION.lock"
  flock 9
  # These builds get Go module and build caches of their own (about 4 GB), removed once the
  # binaries exist: nothing else needs them, and a user's own Go caches stay untouched.
  # One pair per version: a build of another version may run meanwhile and remove its own.
  go_caches="$CACHE/build/go-kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
  export GOMODCACHE="$go_caches/mod" GOCACHE="$go_caches/build"
  trap 'if [[ -x "$dest/kube-apiserver" && -x "$dest/etcd" && -x "$dest/kubectl" ]]; then chmod -R u+w "$go_caches" 2>/dev/null; rm -rf "$go_caches"; fi' EXIT
fi

if [[ ! -x "$dest/kube-apiserver" ]]; then
  command -v go >/dev/null || { log "Go is required to build kube-apiserver (or set KUBEBUILDER_ASSETS)"; exit 1; }
  work="$CACHE/build/kube-$KUBE_VERSION"
  mkdir -p "$work" "$dest"
  staging_version="v0.${KUBE_VERSION#v1.}"
  log "building kube-apiserver $KUBE_VERSION from the Go module proxy (once; cached in $dest)"
  (
    cd "$work"
    gomod_file=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module cgo.local/kubebuild"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo
      # Each `k8s.io/<m> => ./staging/...` line of kubernetes' own go.mod becomes a pin to the tag.
      sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod_file"
    } >go.mod
    # A main package cannot be imported, so `go get` it to record the sums its build needs.
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    mv "$dest/kube-apiserver.tmp" "$dest/kube-apiserver"
  )
fi

if [[ ! -x "$dest/etcd" ]]; then
  work="$CACHE/build/etcd-$ETCD_VERSION"
  mkdir -p "$work" "$dest"
  log "building etcd $ETCD_VERSION from the Go module proxy (once; cached in $dest)"
  (
    cd "$work"
    printf 'module cgo.local/etcdbuild\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dest/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$dest/etcd.tmp" "$dest/etcd"
  )
fi

if [[ ! -x "$dest/kubectl" || -L "$dest/kubectl" ]]; then
  # A kubectl of the same minor version as the apiserver, from the same wrapper module.
  log "building kubectl $KUBE_VERSION (once; cached in $dest)"
  (
    cd "$CACHE/build/kube-$KUBE_VERSION"
    go get "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION" >&2
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
    rm -f "$dest/kubectl"
    mv "$dest/kubectl.tmp" "$dest/kubectl"
  )
fi

echo "$dest"
