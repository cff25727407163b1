# Breakwater's two commands: `make demo` and `make test`. Everything else is a helper.
#
# Cargo's target directory lives outside the clone so repeated runs (and CI on the same
# machine) reuse the RocksDB and librdkafka builds; a cold build still works, only slower.

SHELL := /bin/bash
CARGO_TARGET_DIR ?= $(HOME)/.cache/cargo-target/breakwater
export CARGO_TARGET_DIR
CARGO ?= cargo

.PHONY: demo test build lint fmt kafka-start kafka-stop bench fuzz fuzz-smoke deploy-check

## Run the embedded demo: in-process Kafka, the article's SKU-1247 story. Built with exactly
## the same invocation as `make test` (`cargo run -p breakwater` resolves other features and
## would rebuild RocksDB and most crates), so running one after the other builds nothing twice.
demo:
	$(CARGO) build --workspace --all-targets --locked
	"$(CARGO_TARGET_DIR)/debug/breakwater" demo

## Build, start a real Kafka broker, run every test (unit, mock cluster, real broker), stop
## the broker even on failure, then fuzz the decoders briefly; non-zero exit on any failure.
test: deploy-check
	$(CARGO) build --workspace --all-targets --locked
	@set -euo pipefail; \
	trap 'bash scripts/kafka.sh stop >&2' EXIT; \
	BREAKWATER_KAFKA_BOOTSTRAP=$$(bash scripts/kafka.sh start | tail -1); \
	export BREAKWATER_KAFKA_BOOTSTRAP; \
	echo "Kafka at $$BREAKWATER_KAFKA_BOOTSTRAP" >&2; \
	$(CARGO) test --workspace --locked --no-fail-fast -- --include-ignored
	bash scripts/fuzz.sh smoke

## The deploy side without a Docker engine: docker-compose config, the Prometheus config,
## the alert rules and their unit tests (deploy/alerts.test.yml), the Alertmanager config,
## the dashboard's JSON, the runbook links. Needs Debian's docker-compose, prometheus
## (promtool) and prometheus-alertmanager (amtool); .ci/run installs them.
deploy-check:
	bash scripts/deploy-check.sh

## The decoders under cargo fuzz (nightly), briefly: part of `make test`.
fuzz-smoke:
	bash scripts/fuzz.sh smoke

## The decoders under cargo fuzz for 10M executions per target.
fuzz:
	bash scripts/fuzz.sh long

build:
	$(CARGO) build --workspace --all-targets --locked

## Format check and clippy, as CI's reviewers expect.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

kafka-start:
	@bash scripts/kafka.sh start

kafka-stop:
	@bash scripts/kafka.sh stop

## The fold alone on a realistic mix over 100k keys (prints events/s).
bench:
	$(CARGO) bench -p breakwater-core --bench fold
