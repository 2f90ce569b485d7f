#!/usr/bin/env bash
# `make test-compat`: the API, controller and reset test binaries and the Helm chart tests against
# the oldest and the newest supported Kubernetes (CGO_COMPAT_VERSIONS overrides the list), each
# kube-apiserver/etcd/kubectl built once and cached per version. Ends with one line per version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
read -r -a versions <<<"${CGO_COMPAT_VERSIONS:-v1.30.14 v1.37.2}"
summary=()
status=0
for version in "${versions[@]}"; do
  echo "==> Kubernetes $version: tools (cached under ${CGO_CACHE:-$HOME/.cache/consumer-group-operator})"
  # An inherited KUBEBUILDER_ASSETS (or the previous version's) would be used instead of $version.
  unset KUBEBUILDER_ASSETS
  tools_start=$(date +%s)
  # Assigned first: a failure inside `eval "$(...)"` would not stop the script, and the tests
  # would then build and run the default version.
  exports=$(CGO_KUBE_VERSION="$version" scripts/deps.sh)
  eval "$exports"
  tools=$(( $(date +%s) - tools_start ))
  echo "    kube-apiserver, etcd, kubectl: $KUBEBUILDER_ASSETS (${tools}s)"
  log=$(mktemp)
  start=$(date +%s)
  # --no-fail-fast: one failing binary must not hide the results of the others.
  rc=0
  cargo test --no-fail-fast --test api --test controller --test reset 2>&1 | tee "$log" || rc=$?
  cargo test --no-fail-fast --test operate chart_ 2>&1 | tee -a "$log" || rc=$?
  secs=$(( $(date +%s) - start ))
  counts=$(awk '/^test result: / { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
                END { printf "%d passed, %d failed", p, f }' "$log")
  rm -f "$log"
  # A build error or a crashed test binary fails the run even when no test reported a failure.
  [[ $rc -eq 0 ]] || { counts="$counts (cargo exited $rc)"; status=1; }
  summary+=("Kubernetes $version: $counts, ${secs}s (tools ${tools}s)")
done
echo "==> make test-compat"
printf '%s\n' "${summary[@]}"
exit $status
