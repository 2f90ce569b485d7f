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
cargo build --quiet -p testenv --bin cgo-env --bin cgo-consumers
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

state=$(mktemp -d -t cgo-demo-XXXXXX)
pids=()
cleanup() {
  echo
  echo "==> stopping the consumers, the operator, Kafka and kube-apiserver"
  # Newest first: the consumers commit and leave their group while Kafka still runs.
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
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

echo "==> creating topics: orders (6 partitions), payments (12), audit-log (3), audit-log-eu (3), invoices (3)"
for spec in orders:6 payments:12 audit-log:3 audit-log-eu:3 invoices:3; do
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
    --create --topic "${spec%%:*}" --partitions "${spec##*:}" --replication-factor 1 >/dev/null
done

echo "==> starting the operator (logs: $state/operator.log)"
# Lag in status every 5 s rather than every minute, so the demo shows it moving at once.
# The demo's namespace doubles as the operator's: ClusterKafkaConnection Secrets live there.
RUST_BACKTRACE=1 "$target_dir/debug/consumer-group-operator" run \
  --default-bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" --operator-namespace default \
  --metrics-address 127.0.0.1:0 \
  --resync-seconds 5 --status-lag-interval-seconds 5 >"$state/operator.log" 2>&1 &
pids+=($!)

show() { echo; echo "\$ kubectl $*"; kubectl "$@"; }

echo "==> applying the ConsumerGroups and connections of examples/ (pointed at the local broker)"
kubectl create deployment audit-consumer --image=ghcr.io/example/audit-consumer:1.0 --replicas=1 >/dev/null
# A Secret named by a ConsumerGroup is read only once labelled for it.
kubectl create secret generic kafka-client --from-literal=security.protocol=plaintext >/dev/null
kubectl label secret kafka-client kafka.operators.dev/client-properties=true >/dev/null
# The platform team's connection: its Secret in the operator's namespace, usable from namespaces
# labelled kafka-access=orders.
kubectl create secret generic shared-kafka-client --from-literal=client.id=shared-kafka >/dev/null
kubectl label namespace default kafka-access=orders >/dev/null
sed "s/bootstrapServers: .*/bootstrapServers: $KAFKA_BOOTSTRAP_SERVERS/" examples/clusterkafkaconnection.yaml | kubectl apply -f - >/dev/null
for file in examples/consumergroup*.yaml examples/hpa-on-lag.yaml; do
  sed "s/127.0.0.1:9092/$KAFKA_BOOTSTRAP_SERVERS/" "$file" | kubectl apply -f - >/dev/null
done

echo "==> waiting for the operator to report"
for _ in $(seq 1 60); do
  ready=$(kubectl get cg orders-consumer -o jsonpath='{.status.partitions}' 2>/dev/null || true)
  [[ -n "$ready" ]] && break
  sleep 1
done
sleep 2
show get consumergroups
show get deployments
show get clusterkafkaconnections
echo
echo "\$ kubectl describe consumergroup orders-consumer"
kubectl describe consumergroup orders-consumer | sed -n '/^Status:/,$p'

echo
echo "==> real consumers for 'payments-consumer': no kubelet runs here, so cgo-consumers keeps as many"
echo "    Kafka consumers in the group as the Deployment asks for, each processing 25 messages/s"
"$target_dir/debug/cgo-consumers" default payments-consumer 25 2>"$state/consumers.log" &
pids+=($!)
echo "==> producing 3,000 messages to 'payments' (12 partitions): lag rises, replicas follow up to the cap"
kafka_tool org.apache.kafka.tools.ProducerPerformance --topic payments --num-records 3000 --record-size 100 \
  --throughput -1 --producer-props bootstrap.servers="$KAFKA_BOOTSTRAP_SERVERS" >/dev/null
for _ in $(seq 1 30); do
  lag=$(kubectl get cg payments-consumer -o jsonpath='{.status.lag.total}' 2>/dev/null || true)
  [[ -n "$lag" && "$lag" -gt 0 ]] && break
  sleep 1
done
show get consumergroups payments-consumer -o wide
kubectl get cg payments-consumer -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
echo "==> the consumers drain the lag"
for _ in $(seq 1 90); do
  lag=$(kubectl get cg payments-consumer -o jsonpath='{.status.lag.total}' 2>/dev/null || true)
  [[ "$lag" == 0 ]] && break
  sleep 1
done
show get consumergroups payments-consumer -o wide
echo
echo "\$ kubectl get cg payments-consumer -o jsonpath='{.status.autoscaling}'"
kubectl get cg payments-consumer -o jsonpath='{.status.autoscaling}'; echo
tail -n 3 "$state/consumers.log"

echo
echo "==> offset resets: a DryRun preview, then an executed replay of 'payments' to the earliest offsets"
sed "s/orders-consumer/payments-consumer/" examples/offsetreset-dryrun.yaml | kubectl apply -f - >/dev/null
sleep 3
show get offsetresets
echo
echo "\$ kubectl get offsetreset replay-orders -o jsonpath='{.status.plan[0:3]}'"
kubectl get offsetreset replay-orders -o jsonpath='{.status.plan[0:3]}'; echo
kubectl apply -f - >/dev/null <<EOF
apiVersion: kafka.operators.dev/v1alpha1
kind: OffsetReset
metadata: {name: replay-payments}
spec: {consumerGroup: payments-consumer, target: {toEarliest: true}, mode: Execute, quiesceTimeoutSeconds: 60}
EOF
for _ in $(seq 1 60); do
  phase=$(kubectl get offsetreset replay-payments -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
  sleep 1
done
show get offsetresets -o wide
kubectl get events --field-selector involvedObject.name=replay-payments -o custom-columns=REASON:.reason,MESSAGE:.message 2>/dev/null | head -5
sleep 4
show get consumergroups

if [[ "${DEMO_EXIT_AFTER_SHOW:-0}" == 1 ]]; then
  exit 0
fi
echo
echo "The environment keeps running. In another shell:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  $CGO_KUBECTL get cg -w"
echo "Press Ctrl-C to stop everything."
while true; do sleep 3600; done
