# Everyday targets. The two that matter on a fresh machine:
#   make demo   - bring up a local Kafka + kube-apiserver, run the operator against it
#   make test   - run the whole test suite against a real Kafka and kube-apiserver
# Tools are fetched/built once into $(CGO_CACHE) (default ~/.cache/consumer-group-operator).

SHELL := /bin/bash
export CGO_CACHE ?= $(HOME)/.cache/consumer-group-operator
CARGO ?= cargo

.PHONY: all build test test-compat test-kafka-compat unit-test lint fmt crds check-crds deps demo bench clean-cache

all: build

build:
	$(CARGO) build --all-targets

# Fetches Kafka jars and builds kube-apiserver/etcd/kubectl if they are not cached yet.
deps:
	@scripts/deps.sh >/dev/null

# Everything CI runs: lint, CRD drift check, unit + integration tests (real Kafka + apiserver).
test:
	@scripts/test.sh

# The API, controller, reset and chart tests against the oldest and the newest supported
# Kubernetes (each apiserver built once per version, a few minutes); not part of `make test`.
test-compat:
	@scripts/test-compat.sh

# The Kafka-facing tests against the oldest supported Kafka line (3.9) and 4.1 (jars fetched once
# per release); `make test` runs the newest.
test-kafka-compat:
	@scripts/test-kafka-compat.sh

unit-test:
	$(CARGO) test --lib

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Regenerates crds/ and the chart's copy from the Rust types.
crds:
	$(CARGO) run --quiet -- crd > crds/consumer-group-operator.yaml
	cp crds/consumer-group-operator.yaml charts/consumer-group-operator/crds/consumer-group-operator.yaml

demo:
	@scripts/demo.sh

# Lag collection and offset resets against Kafka's own tool on a real broker, reconcile latency
# against a bare apiserver round trip, and 1,000 ConsumerGroups against the operator before the
# per-cluster observer, and time-to-drain against lag-threshold autoscaling with real consumers;
# each prints ratios against its reference from the same run.
bench:
	@eval "$$(scripts/deps.sh)" && $(CARGO) bench --bench lag && $(CARGO) bench --bench reset && $(CARGO) bench --bench reconcile \
		&& $(CARGO) bench --bench drain \
		&& BENCH_BASELINE_BIN="$$(scripts/baseline.sh)" $(CARGO) bench --bench scale

clean-cache:
	rm -rf $(CGO_CACHE)
