#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a set time each (default 60 s) with cargo-fuzz (nightly,
# libFuzzer), then say which found a crash. New inputs a run finds go to a scratch folder
# (FUZZ_WORK, default /var/tmp/yunjian-fuzz); the committed seeds in fuzz/corpus/<target>/ are
# read, never written. A crash leaves its input in fuzz/artifacts/<target>/: minimise it
# (`cargo +nightly fuzz tmin <target> <file>`), fix the decoder, and commit the minimised input
# to fuzz/corpus/<target>/ so `cargo test -p yunjian-tests --test fuzz_corpus` replays it.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Needs: rustup's nightly toolchain and `cargo install cargo-fuzz`.
set -euo pipefail

secs="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${FUZZ_WORK:-/var/tmp/yunjian-fuzz}"
cd "$root/fuzz"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t"
    echo "== $t: ${secs}s"
    # -timeout: one input running past 10 s is a finding (the decoders are bounded);
    # -rss_limit_mb / -malloc_limit_mb: so is a process past 2 GiB or one allocation past 512 MiB
    if ! cargo +nightly fuzz run "$t" "$work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -max_len=65536 -print_final_stats=1 2>&1 | tee "$work/$t.log" | grep -E '^(#[0-9]+ +DONE|==[0-9]+==|SUMMARY|stat::)'; then
        :
    fi
    if grep -qE '^(==[0-9]+== ?ERROR|SUMMARY: libFuzzer|.*panicked at)' "$work/$t.log"; then
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/, logs in $work/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} target(s), ${secs}s each, no crash"
