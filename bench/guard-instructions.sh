#!/usr/bin/env bash
# Instructions per inspection of the criterion bench's typical request and 64 KB JSON bodies,
# counted by cachegrind (this VM has no hardware counters, and its timings wander too much
# to compare small changes): the difference between two iteration counts, so start-up and
# the one-time building of the automata cancel out.
#
# Usage: bench/guard-instructions.sh   (needs valgrind: apt-get install valgrind)
#        VALUE='some text' bench/guard-instructions.sh   the cost of inspecting one query value
#        QUERY='a=1&b=2' bench/guard-instructions.sh     the cost of inspecting one query string
#        FRESH=1 bench/guard-instructions.sh   with a new Report (and buffers) for each inspection
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
cargo build --release -q -p rampart-guard --example inspect_loop
BIN=target/release/examples/inspect_loop

instructions() { # iterations [JSON kind]
  env N="$1" ${2:+JSON=$2} ${VALUE:+VALUE="$VALUE"} ${QUERY:+QUERY="$QUERY"} ${FRESH:+FRESH=1} valgrind --tool=cachegrind --cache-sim=no \
    --cachegrind-out-file=/dev/null "$BIN" 2>&1 | awk '/I *refs/ { gsub(",", "", $4); print $4 }'
}
per_iteration() { # name few many [JSON kind]
  local a b
  a=$(instructions "$2" "${4:-}")
  b=$(instructions "$3" "${4:-}")
  printf '%-34s %12d instructions\n' "$1" $(((b - a) / ($3 - $2)))
}
if [ -n "${VALUE:-}" ]; then
  per_iteration "one query value" 200 2200
  exit
fi
if [ -n "${QUERY:-}" ]; then
  per_iteration "one query string" 200 1200
  exit
fi
per_iteration "typical request (10 params, 1 KB)" 200 1200
per_iteration "JSON body 64 KB" 5 25 records
per_iteration "JSON body 64 KB, no string repeated" 5 25 distinct
