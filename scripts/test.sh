#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
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
trap 'rm -f "$log"' EXIT
# --no-fail-fast: one failing binary must not hide the results of the others.
cargo test --workspace --tests --no-fail-fast 2>&1 | tee "$log"
echo "==> make test finished in $(( $(date +%s) - start ))s"
# One closing line over every test binary.
awk '/^test result: / { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
