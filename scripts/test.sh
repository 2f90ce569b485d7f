#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
echo "==> tools (cached under ${CGO_CACHE:-$HOME/.cache/consumer-group-operator})"
eval "$(scripts/deps.sh)"
echo "    Kafka jars: $CGO_KAFKA_LIBS"
echo "    kube-apiserver, etcd, kubectl: $KUBEBUILDER_ASSETS"
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test (unit tests, then integration tests against a real Kafka broker and kube-apiserver)"
cargo test --workspace --lib --bins --tests
echo "==> make test finished in $(( $(date +%s) - start ))s"
