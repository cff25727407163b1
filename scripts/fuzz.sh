#!/usr/bin/env bash
# Fuzzes the decoders with cargo fuzz (libFuzzer, nightly) over a corpus made from
# testdata/golden: the JSON goldens for the `json` target, the Avro goldens without their
# 5-byte Confluent header for the `avro` target.
#
# Usage: scripts/fuzz.sh smoke     a short run of every target (part of `make test`)
#        scripts/fuzz.sh long      10M executions of every target (`make fuzz`)
#
# Needs a nightly toolchain and cargo-fuzz (`.ci/run` installs both). The build goes to
# BREAKWATER_FUZZ_TARGET_DIR (default ~/.cache/cargo-target/breakwater-fuzz), outside the
# clone, so it is reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
    smoke) RUNS=200000 ;;
    long) RUNS=10000000 ;;
    *) echo "usage: $0 smoke|long" >&2; exit 2 ;;
esac

FUZZ_DIR=crates/breakwater-codec/fuzz
TARGET_DIR="${BREAKWATER_FUZZ_TARGET_DIR:-${HOME:?}/.cache/cargo-target/breakwater-fuzz}"

command -v cargo-fuzz >/dev/null 2>&1 || { echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "fuzz.sh: no nightly toolchain: rustup toolchain install nightly --profile minimal" >&2; exit 1; }

# The seed corpus: rebuilt from the goldens each time (libFuzzer adds what it finds).
mkdir -p "$FUZZ_DIR/corpus/json" "$FUZZ_DIR/corpus/avro"
for f in testdata/golden/*.json; do
    cp "$f" "$FUZZ_DIR/corpus/json/golden-$(basename "$f")"
done
for f in testdata/golden/*.avro.bin; do
    tail -c +6 "$f" >"$FUZZ_DIR/corpus/avro/golden-$(basename "$f")"
done

for target in json avro; do
    echo "fuzz.sh: $target, $RUNS executions" >&2
    cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR" "$target" \
        "$FUZZ_DIR/corpus/$target" -- -runs="$RUNS" -max_len=4096 -print_final_stats=1
done
