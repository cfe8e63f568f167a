#!/usr/bin/env bash
# Wall time of inspection, this checkout against another revision, in interleaved runs of the
# instruction loop (`examples/inspect_loop.rs`): the typical request, and the 64 KB JSON
# bodies. On this VM the instruction count does not foretell the time (the processor runs
# four or five instructions a cycle where nothing stalls it, and one where a branch or a
# dependent load does), and the machine's speed drifts from minute to minute: only builds run
# side by side, many times over, can be compared. Prints the best and the median of each.
#
# Usage: bench/guard-ab.sh REV [ROUNDS]   (default 10 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
REV="$1"
ROUNDS="${2:-10}"
source bench/common.sh

cargo build --release -q -p rampart-guard --example inspect_loop
cp target/release/examples/inspect_loop "$WORK/this"
git worktree add -q --detach "$WORK/tree" "$REV"
stop_more() { git worktree remove --force "$WORK/tree" 2>/dev/null || true; }
(cd "$WORK/tree" && CARGO_TARGET_DIR="$WORK/target" cargo build --release -q -p rampart-guard --example inspect_loop)
cp "$WORK/target/release/examples/inspect_loop" "$WORK/$REV"

run() { # label iterations [env]
  local label=$1 n=$2
  shift 2
  # The order alternates from round to round: the build run second can gain (or lose) from
  # the first one's run, the same for every input.
  for round in $(seq "$ROUNDS"); do
    local order="$REV this"
    if ((round % 2 == 0)); then order="this $REV"; fi
    for build in $order; do
      local start end
      start=$(date +%s%N)
      env N="$n" "$@" "$WORK/$build"
      end=$(date +%s%N)
      echo "$build $(((end - start) / n))"
    done
  done | awk -v label="$label" '
    { times[$1] = times[$1] " " $2 }
    END {
      for (build in times) {
        n = split(times[build], t, " "); asort(t)
        printf "%-36s %-12s best %8d ns  median %8d ns\n", label, build, t[1], t[int((n + 1) / 2)]
      }
    }' | sort
}
run "typical request (10 params, 1 KB)" 100000
run "JSON body 64 KB" 3000 JSON=records
run "JSON body 64 KB, no string repeated" 1500 JSON=distinct
