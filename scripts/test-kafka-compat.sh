#!/usr/bin/env bash
# `make test-kafka-compat`: the Kafka-facing test binaries (kafka, protocol, lag, reset,
# controller) against other Kafka releases than `make test`'s (CGO_KAFKA_COMPAT_VERSIONS
# overrides the list: the oldest supported line and the one before the newest), each release's
# jars fetched once from Maven Central and cached. Ends with one line per release.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
read -r -a versions <<<"${CGO_KAFKA_COMPAT_VERSIONS:-3.9.1 4.1.2}"
summary=()
status=0
for version in "${versions[@]}"; do
  echo "==> Kafka $version: jars (cached under ${CGO_CACHE:-$HOME/.cache/consumer-group-operator})"
  # An inherited CGO_KAFKA_LIBS (or the previous release's) would be used instead of $version.
  unset CGO_KAFKA_LIBS
  # Assigned first: a failure inside `eval "$(...)"` would not stop the script.
  exports=$(CGO_KAFKA_VERSION="$version" scripts/deps.sh)
  eval "$exports"
  echo "    Kafka jars: $CGO_KAFKA_LIBS"
  log=$(mktemp)
  start=$(date +%s)
  rc=0
  # --no-fail-fast: one failing binary must not hide the results of the others.
  cargo test --no-fail-fast --test kafka --test protocol --test lag --test reset --test controller 2>&1 | tee "$log" || rc=$?
  secs=$(( $(date +%s) - start ))
  counts=$(awk '/^test result: / { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
                END { printf "%d passed, %d failed", p, f }' "$log")
  rm -f "$log"
  [[ $rc -eq 0 ]] || { counts="$counts (cargo exited $rc)"; status=1; }
  summary+=("Kafka $version: $counts, ${secs}s")
done
echo "==> make test-kafka-compat"
printf '%s\n' "${summary[@]}"
exit $status
