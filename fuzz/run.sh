#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, two at a time, starting from
# the seeds in fuzz/seeds/<target>/ plus what earlier runs kept in fuzz/corpus/<target>/.
# Prints each target's last libFuzzer status line; exits 1 if any target found a crash
# (the input is in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh SECONDS [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build >/dev/null
mkdir -p logs

run_one() {
    local target=$1
    mkdir -p "corpus/$target" "artifacts/$target"
    if [ -d "seeds/$target" ]; then
        cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    if cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"logs/$target.log" 2>&1; then
        echo "ok    $target: $(grep -E '^#[0-9]+' "logs/$target.log" | tail -1)"
    else
        echo "CRASH $target: see fuzz/logs/$target.log and fuzz/artifacts/$target/"
        return 1
    fi
}

failed=0
pids=()
names=()
for target in "${targets[@]}"; do
    run_one "$target" &
    pids+=($!)
    names+=("$target")
    # Two at a time, for two cores.
    if [ ${#pids[@]} -eq 2 ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[1]}")
    fi
done
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
exit $failed
