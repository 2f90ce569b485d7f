#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
# A full disk fails the build with only "rustc ... (exit status: 101)" in the output's tail: say so.
explain_failure() {
  local status=$1
  if [ "$status" -ne 0 ]; then
    local free_kib
    free_kib=$(df -Pk "${CARGO_TARGET_DIR:-.}" 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
    if [ -n "$free_kib" ] && [ "$free_kib" -lt $((5 * 1024 * 1024)) ]; then
      echo "==> make test failed with $((free_kib / 1024)) MiB free where cargo builds: a build needs several GB; free some (cargo clean) and run it again" >&2
    fi
  fi
}
trap 'explain_failure $?' EXIT
echo "==> tools (cached under ${CGO_CACHE:-$HOME/.cache/consumer-group-operator})"
eval "$(scripts/deps.sh)"
echo "    Kafka jars: $CGO_KAFKA_LIBS"
echo "    kube-apiserver, etcd, kubectl: $KUBEBUILDER_ASSETS"
echo "    helm: $CGO_HELM"
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test (unit tests, then integration tests against a real Kafka broker and kube-apiserver)"
log=$(mktemp)
trap 'status=$?; rm -f "$log"; explain_failure $status' EXIT
# --no-fail-fast: one failing binary must not hide the results of the others.
cargo test --workspace --tests --no-fail-fast 2>&1 | tee "$log"
echo "==> make test finished in $(( $(date +%s) - start ))s"
# One closing line over every test binary.
awk '/^test result: / { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
