#!/usr/bin/env bash
# Failure storm: an upstream (nginx) failing 50% of requests, then 100%, behind `rampart serve`
# with its default resilience settings (2 attempts, retry budget 20% + 3/s, breakers,
# ejection). Prints the amplification factor (requests reaching the upstream / client
# requests) for each phase, and the time from the upstream's recovery to the first
# successful client request.
#
# Usage: bench/failure-storm.sh [SECONDS_PER_PHASE]   (default 10; nginx and wrk are installed if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE="${1:-10}"

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
source bench/common.sh
install_missing "${need[@]}"
cargo build --release -q -p rampart

UP=127.0.0.1:18101 RMP=127.0.0.1:18102 ADM=127.0.0.1:18103

# The upstream: nginx failing a share of requests with 503, chosen by request id;
# `control R` rewrites its config for the share R and reloads it; its access log counts
# what reaches it.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
write_upstream_conf() {
  local location split=""
  case "$1" in
    0|0.0) location='return 200 "ok\n";' ;;
    1|1.0) location='return 503;' ;;
    *)
      location='if ($fail) { return 503; } return 200 "ok\n";'
      split="split_clients \"\${request_id}\" \$fail { $(awk -v f="$1" 'BEGIN{ printf "%g", f*100 }')% 1; * 0; }"
      ;;
  esac
  cat >"$WORK/upstream.conf" <<CONF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log warn;
events { worker_connections 4096; }
http {
  access_log $WORK/hits.log;
  keepalive_requests 1000000;
  $split
  server { listen $UP; location / { $location } }
}
CONF
}
write_upstream_conf 0
"$NGINX" -c "$WORK/upstream.conf" -p "$WORK"
PIDS+=("$(cat "$WORK/upstream.pid")")
for _ in $(seq 100); do curl -fs "http://$UP/" >/dev/null 2>&1 && break; sleep 0.1; done

# One benchmark client must not be rate limited: per-IP limits out of its reach.
LIMITS='[rate_limit]
limits = [{ name = "ip", key = "ip", rate = 1000000000, per = "1m" }]'

# Retries and their budget alone: breakers and ejection off.
cat >"$WORK/retries-only.toml" <<TOML
[server]
listen = "$RMP"
admin = "$ADM"
$LIMITS
[upstreams.default]
servers = ["http://$UP"]
breaker = { enabled = false }
pool_breaker = { enabled = false }
outlier = { enabled = false }
TOML

cat >"$WORK/default.toml" <<TOML
[server]
listen = "$RMP"
admin = "$ADM"
$LIMITS
[upstreams.default]
servers = ["http://$UP"]
TOML

start_rampart() {
  [ -n "${RAMPART_PID:-}" ] && { kill "$RAMPART_PID"; wait "$RAMPART_PID" 2>/dev/null || true; }
  target/release/rampart serve "$@" --threads 1 --log warn >/dev/null & RAMPART_PID=$!
  PIDS+=("$RAMPART_PID")
  for _ in $(seq 100); do curl -fs "http://$RMP/warmup" >/dev/null 2>&1 && break; sleep 0.1; done
}

control() {
  write_upstream_conf "$1"
  "$NGINX" -c "$WORK/upstream.conf" -p "$WORK" -s reload 2>/dev/null
  sleep 0.5
  : >"$WORK/hits.log"
  "$NGINX" -c "$WORK/upstream.conf" -p "$WORK" -s reopen 2>/dev/null
  sleep 0.2
}
hits() { wc -l <"$WORK/hits.log"; }

phase() {
  control "$1"
  local out requests upstream
  out=$(wrk -t1 -c8 -d"${PHASE}s" "http://$RMP/work")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  upstream=$(hits)
  awk -v f="$1" -v c="$requests" -v u="$upstream" \
    'BEGIN{ printf "upstream failing %3.0f%%: %7d client requests, %7d reached the upstream, amplification %.3f\n", f*100, c, u, u/c }'
}

echo "failure storm, ${PHASE}s per phase, wrk -t1 -c8, retry budget 20% + 3/s over 10 s"
echo "-- retries and budget only (breakers and ejection off)"
control 0.0
start_rampart --config "$WORK/retries-only.toml"
phase 0.5
phase 1.0
echo "-- default profile (retries, budget, breakers, ejection)"
control 0.0
start_rampart --config "$WORK/default.toml"
phase 0.5
phase 1.0

# Recovery: the upstream heals; poll every 10 ms until a client request succeeds.
control 0.0
start=$(date +%s.%N)
for _ in $(seq 12000); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$RMP/recover" || true)
  [ "$code" = 200 ] && break
  sleep 0.01
done
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v c="$code" 'BEGIN{ printf "recovery: first successful client request %.2f s after the upstream recovered (last status %s)\n", e-s, c }'
