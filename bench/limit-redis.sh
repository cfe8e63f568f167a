#!/usr/bin/env bash
# Redis rate-limit decisions per second: redis-benchmark calling the limiter's Lua GCRA
# script by EVALSHA directly (the raw figure), then rampart-limit deciding through the
# same script with the same concurrency, in one run against one fresh redis-server.
#
# Usage: bench/limit-redis.sh [CONCURRENCY] [SECONDS]   (defaults 50 and 5)
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY="${1:-50}"
SECONDS_PER_RUN="${2:-5}"
PORT=18201

command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
cargo bench -p rampart-limit --bench redis_throughput --no-run -q 2>/dev/null

redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# The script, as the crate sends it.
SCRIPT=$(awk '/^const GCRA_LUA: &str = r#"/{flag=1; next} /^"#;/{flag=0} flag' crates/rampart-limit/src/redis.rs)
SHA=$(redis-cli -p "$PORT" SCRIPT LOAD "$SCRIPT")
# Same arguments as the crate for 1,000,000 per minute: emission 60 µs, tolerance 60 s.
REQUESTS=$((CONCURRENCY * 4000))
RAW=$(redis-benchmark -p "$PORT" -c "$CONCURRENCY" -n "$REQUESTS" -r 100000 -q \
  EVALSHA "$SHA" 1 "rl:bench:__rand_int__" 60 60000000 | tr '\r' '\n' \
  | grep -o '[0-9.]* requests per second' | tail -1 | awk '{print $1}')
echo "redis-benchmark EVALSHA (raw):     ${RAW} decisions/s (concurrency $CONCURRENCY)"

OURS=$(REDIS_URL="redis://127.0.0.1:$PORT/" CONCURRENCY="$CONCURRENCY" SECONDS="$SECONDS_PER_RUN" \
  cargo bench -p rampart-limit --bench redis_throughput -q 2>/dev/null | grep 'decisions/s')
echo "$OURS"
RATE=$(awk '{print $4}' <<<"$OURS")
awk -v o="$RATE" -v r="$RAW" 'BEGIN{ printf "rampart-limit / raw: %.2f\n", o/r }'
