#!/usr/bin/env bash
# `make demo`: a real Kafka broker and kube-apiserver on this machine, the CRDs installed, a topic
# with 6 partitions, the operator running against them, and the examples applied.
# Ctrl-C stops everything. DEMO_EXIT_AFTER_SHOW=1 stops after printing the state (for scripts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

eval "$(scripts/deps.sh)"
echo "==> building the operator"
cargo build --quiet --bin consumer-group-operator -p consumer-group-operator
cargo build --quiet -p testenv --bin cgo-env
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

state=$(mktemp -d -t cgo-demo-XXXXXX)
pids=()
cleanup() {
  echo
  echo "==> stopping the operator, Kafka and kube-apiserver"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> starting Kafka (KRaft) and kube-apiserver + etcd"
"$target_dir/debug/cgo-env" "$state" 2>"$state/env.log" &
pids+=($!)
for _ in $(seq 1 180); do [[ -f "$state/ready" ]] && break; sleep 1; done
[[ -f "$state/ready" ]] || { cat "$state/env.log"; echo "the local environment did not start"; exit 1; }
# shellcheck disable=SC1091
source "$state/env"
kubectl() { "$CGO_KUBECTL" "$@"; }
echo "    Kafka: $KAFKA_BOOTSTRAP_SERVERS   kubeconfig: $KUBECONFIG"

kafka_tool() { java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$CGO_KAFKA_LIBS/*" "$@"; }

echo "==> installing the CRDs"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/consumergroups.kafka.operators.dev --timeout=60s >/dev/null

echo "==> creating topics: orders (6 partitions), payments (12), audit-log (3), audit-log-eu (3)"
for spec in orders:6 payments:12 audit-log:3 audit-log-eu:3; do
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
    --create --topic "${spec%%:*}" --partitions "${spec##*:}" --replication-factor 1 >/dev/null
done

echo "==> starting the operator (logs: $state/operator.log)"
RUST_BACKTRACE=1 "$target_dir/debug/consumer-group-operator" run \
  --default-bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" \
  --metrics-address 127.0.0.1:0 \
  --resync-seconds 5 >"$state/operator.log" 2>&1 &
pids+=($!)

echo "==> applying examples/ (bootstrap servers pointed at the local broker)"
kubectl create deployment audit-consumer --image=ghcr.io/example/audit-consumer:1.0 --replicas=1 >/dev/null
kubectl create secret generic kafka-client --from-literal=security.protocol=plaintext >/dev/null
for file in examples/*.yaml; do
  sed "s/127.0.0.1:9092/$KAFKA_BOOTSTRAP_SERVERS/" "$file" | kubectl apply -f - >/dev/null
done

echo "==> waiting for the operator to report"
for _ in $(seq 1 60); do
  ready=$(kubectl get cg orders-consumer -o jsonpath='{.status.partitions}' 2>/dev/null || true)
  [[ -n "$ready" ]] && break
  sleep 1
done
sleep 2

echo
echo "\$ kubectl get consumergroups"
kubectl get consumergroups
echo
echo "\$ kubectl get deployments"
kubectl get deployments
echo
echo "\$ kubectl describe consumergroup orders-consumer"
kubectl describe consumergroup orders-consumer | sed -n '/^Spec:/,$p'

if [[ "${DEMO_EXIT_AFTER_SHOW:-0}" == 1 ]]; then
  exit 0
fi
echo
echo "The environment keeps running. In another shell:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  $CGO_KUBECTL get cg -w"
echo "Press Ctrl-C to stop everything."
while true; do sleep 3600; done
