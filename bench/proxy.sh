#!/usr/bin/env bash
# Proxy throughput and latency: the upstream directly, nginx as a keep-alive reverse proxy
# (one worker process) and `rampart serve` (one worker thread, default security profile),
# measured in interleaved rounds (the proxies' order alternating) with `wrk -t1 -c50
# -d10s`, with each proxy's CPU time per request (user and system, from /proc while wrk
# runs); then rampart's resident memory with 1,000 idle keep-alive client connections.
#
# Usage: bench/proxy.sh [ROUNDS]   (default 3; needs root for apt-get when nginx/wrk are missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${DURATION:-10s}"

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
source bench/common.sh
install_missing "${need[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q -p rampart
RAMPART=target/release/rampart

UP=127.0.0.1:18001 NGX=127.0.0.1:18002 RMP=127.0.0.1:18003 ADM=127.0.0.1:18004

write_return_200_upstream "$UP"
write_nginx_proxy "$NGX" "$UP"
write_rampart_proxy "$RMP" "$ADM" "$UP"

"$NGINX" -c "$WORK/upstream.conf" -p "$WORK" & PIDS+=($!)
"$NGINX" -c "$WORK/proxy.conf" -p "$WORK" & NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
"$RAMPART" serve --config "$WORK/rampart.toml" --threads 1 >/dev/null & RAMPART_PID=$!
PIDS+=("$RAMPART_PID")

for addr in $UP $NGX $RMP; do
  for _ in $(seq 100); do curl -fs "http://$addr/" >/dev/null && break; sleep 0.1; done
  curl -fs "http://$addr/" >/dev/null || { echo "nothing answers on $addr"; exit 1; }
done

# The process whose CPU time is the proxy's: nginx's one worker (a child of the master),
# rampart's process (all its threads).
# (A kernel without /proc/PID/task/TID/children leaves nginx's CPU column empty.)
NGINX_WORKER=$(awk '{print $1}' "/proc/$NGINX_MASTER/task/$NGINX_MASTER/children" 2>/dev/null || true)
declare -A CPU_PID=([nginx]=$NGINX_WORKER [rampart]=$RAMPART_PID)
# User and system CPU ticks of a process.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# One unmeasured run each first: connection pools, allocator arenas and page tables are
# filled before the rounds that count, for every target alike.
for addr in $UP $NGX $RMP; do wrk -t1 -c50 -d2s "http://$addr/" >/dev/null; done

# wrk prints latency with units; normalise to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms/,"",v); print v } else if (v ~ /s$/) { sub(/s/,"",v); print v*1000 } else print v }'; }

declare -A RPS P50 P99 USER SYS
# The two proxies swap places every round: a run measures a little faster right after
# another (seen here), and the order must not favour either.
for round in $(seq "$ROUNDS"); do
  if ((round % 2)); then order="upstream nginx rampart"; else order="upstream rampart nginx"; fi
  for target in $order; do
    case $target in upstream) addr=$UP;; nginx) addr=$NGX;; rampart) addr=$RMP;; esac
    pid=${CPU_PID[$target]:-}
    [ -z "$pid" ] || read -r user0 sys0 < <(cpu_ticks "$pid")
    out=$(wrk -t1 -c50 -d"$DURATION" --latency "http://$addr/")
    [ -z "$pid" ] || read -r user1 sys1 < <(cpu_ticks "$pid")
    if grep -q 'Non-2xx' <<<"$out"; then
      echo "$target answered non-2xx responses: the figures would not be comparable" >&2
      grep 'Non-2xx' <<<"$out" >&2
      exit 1
    fi
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    RPS[$target]+="$rps " P50[$target]+="$p50 " P99[$target]+="$p99 "
    cpu=""
    if [ -n "$pid" ]; then
      requests=$(awk '/requests in/ {print $1}' <<<"$out")
      read -r user sys < <(awk -v u=$((user1 - user0)) -v s=$((sys1 - sys0)) -v n="$requests" -v t="$TICK" \
        'BEGIN { printf "%.2f %.2f\n", u / t / n * 1e6, s / t / n * 1e6 }')
      USER[$target]+="$user " SYS[$target]+="$sys "
      cpu=$(printf '  CPU/request user %5.2f us sys %5.2f us' "$user" "$sys")
    fi
    printf 'round %d  %-8s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms%s\n' "$round" "$target" "$rps" "$p50" "$p99" "$cpu"
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

echo
echo "median of $ROUNDS rounds, wrk -t1 -c50 -d$DURATION, $(nproc) cores"
printf '%-10s %12s %10s %10s %18s\n' target "req/s" "p50 ms" "p99 ms" "CPU/req user+sys"
for target in upstream nginx rampart; do
  cpu="-"
  if [ -n "${USER[$target]:-}" ]; then
    cpu=$(printf '%.2f+%.2f us' "$(median "${USER[$target]}")" "$(median "${SYS[$target]}")")
  fi
  printf '%-10s %12.0f %10.3f %10.3f %18s\n' "$target" "$(median "${RPS[$target]}")" "$(median "${P50[$target]}")" "$(median "${P99[$target]}")" "$cpu"
done
awk -v r="$(median "${RPS[rampart]}")" -v n="$(median "${RPS[nginx]}")" -v rp="$(median "${P99[rampart]}")" -v np="$(median "${P99[nginx]}")" \
  'BEGIN{ printf "rampart/nginx: %.2f x req/s, %.2f x p99 (ratio of the medians)\n", r/n, rp/np }'
# The machine's speed drifts between rounds (seen here: the upstream alone by 30%), and
# the two proxies of a round run back to back: the round's own ratio cancels the drift.
paired=$(paste -d' ' <(tr ' ' '\n' <<<"${RPS[rampart]}" | grep -v '^$') <(tr ' ' '\n' <<<"${RPS[nginx]}" | grep -v '^$') \
  | awk '{printf "%.4f ", $1/$2}')
printf 'rampart/nginx per round: %s-> median %.2f x req/s\n' "$paired" "$(median "$paired")"

# Resident memory with 1,000 idle keep-alive connections.
ulimit -n 65536 2>/dev/null || true
python3 - "$RMP" "$RAMPART_PID" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
pid = sys.argv[2]
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss_kib()
conns = []
for _ in range(1000):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"ok\n"):
        data += s.recv(65536)
    conns.append(s)
time.sleep(1)
after = rss_kib()
print(f"rampart RSS: {before/1024:.1f} MiB before, {after/1024:.1f} MiB with {len(conns)} idle keep-alive connections")
PY
