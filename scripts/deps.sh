#!/usr/bin/env bash
# Makes sure Kafka's jars, kube-apiserver/etcd/kubectl and helm are available (fetching/building
# them into the cache once) and prints `export` lines that point the tests and the demo at them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kafka_libs="$("$here/kafka-libs.sh")"
kube_assets="$("$here/kube-assets.sh")"
helm="$("$here/helm.sh")"
echo "export CGO_KAFKA_LIBS='$kafka_libs'"
echo "export KUBEBUILDER_ASSETS='$kube_assets'"
echo "export CGO_HELM='$helm'"
