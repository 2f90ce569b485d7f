#!/usr/bin/env bash
# Builds the operator binary of a git ref in release mode, once, into the cache, and prints its
# path: `make bench` measures it next to the current build for ratios. Default ref: the main
# before the per-cluster observer (BENCH_BASELINE_REF overrides it).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ref="${BENCH_BASELINE_REF:-5e1de54}"
cache="${CGO_CACHE:-$HOME/.cache/consumer-group-operator}"
commit="$(git -C "$repo" rev-parse "$ref^{commit}")"
out="$cache/baseline-$commit/consumer-group-operator"
if [ ! -x "$out" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/baseline.lock"
  flock 9
  if [ ! -x "$out" ]; then
    src="$(mktemp -d)"
    trap 'rm -rf "$src"' EXIT
    git -C "$repo" archive "$commit" | tar -x -C "$src"
    echo "[baseline] building the operator of $ref ($commit) in release mode (once) ..." >&2
    cargo build --quiet --release --bin consumer-group-operator --manifest-path "$src/Cargo.toml" \
      --target-dir "$cache/baseline-target" >&2
    mkdir -p "$(dirname "$out")"
    cp "$cache/baseline-target/release/consumer-group-operator" "$out.tmp"
    mv "$out.tmp" "$out"
  fi
fi
echo "$out"
