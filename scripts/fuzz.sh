#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 60) on the stable toolchain, without sanitizers,
# seeded with the committed corpus; new inputs go to target/fuzz-corpus/<target>, crashes to
# fuzz/artifacts/<target>. Limits per input: 64 KiB, 2 GiB of memory, 10 s.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(yaml kustomization render)
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build --sanitizer none -O
for t in "${targets[@]}"; do
    mkdir -p "target/fuzz-corpus/$t"
    echo "fuzz: $t for ${seconds}s"
    cargo fuzz run --sanitizer none -O "$t" "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 2>&1 | grep -E "^(#|stat::|==|ERROR|SUMMARY|Done)" | tail -12
done
