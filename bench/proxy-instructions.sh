#!/usr/bin/env bash
# User-space instructions and atomic read-modify-write instructions (lock-prefixed, and
# xchg with memory) per proxied request, for `rampart serve --threads 1` and for nginx as
# the same keep-alive proxy (one process), counted by callgrind: repeatable where the
# timings of bench/proxy.sh wander, and the atomics are what a single-threaded nginx
# does not pay. The count covers a 5 s `wrk -t1 -c50` run after a 3 s warm-up, divided by
# the requests answered.
#
# Usage: bench/proxy-instructions.sh   (needs valgrind, nginx, wrk and objdump)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind wrk objdump callgrind_annotate; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (Debian: valgrind wrk binutils)" >&2; exit 1; }
done
source bench/common.sh
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is needed (Debian: nginx)" >&2; exit 1; }
cargo build --release -q -p rampart
RAMPART=target/release/rampart

UP=127.0.0.1:18101 RMP=127.0.0.1:18102 ADM=127.0.0.1:18103 NGX=127.0.0.1:18104

write_return_200_upstream "$UP"
write_nginx_proxy "$NGX" "$UP" single
write_rampart_proxy "$RMP" "$ADM" "$UP"

"$NGINX" -c "$WORK/upstream.conf" -p "$WORK" & PIDS+=($!)
sleep 0.5

# Addresses of the atomic read-modify-write instructions in a binary (a register-only
# xchg, such as the two-byte nop `xchg %ax,%ax`, is not one).
atomics() {
  objdump -d --no-show-raw-insn "$1" |
    awk '$2 == "lock" || ($2 == "xchg" && $3 ~ /\(/) { sub(":", "", $1); print $1 }'
}

# Runs one proxy under callgrind and prints its figures. Arguments: name, port, binary,
# command...
measure() {
  local name=$1 port=$2 binary=$3
  shift 3
  local out="$WORK/$name.callgrind"
  valgrind --tool=callgrind --instr-atstart=no --dump-instr=yes --callgrind-out-file="$out" \
    "$@" >/dev/null 2>&1 &
  local vg=$!
  PIDS+=("$vg")
  sleep 4
  wrk -t1 -c50 -d3s "http://$port/" >/dev/null
  callgrind_control -i on "$vg" >/dev/null 2>&1
  wrk -t1 -c50 -d5s "http://$port/" >"$WORK/$name.wrk"
  callgrind_control -i off "$vg" >/dev/null 2>&1
  callgrind_control -d "$vg" >/dev/null 2>&1
  sleep 1
  kill "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  local dump requests
  dump=$(ls "$out".* | head -1)
  requests=$(awk '/requests in/ { print $1 }' "$WORK/$name.wrk")
  atomics "$binary" >"$WORK/$name.atomics"
  python3 - "$dump" "$WORK/$name.atomics" "$binary" "$requests" "$name" <<'PY'
import re, sys
dump, atomics_file, binary, requests, name = sys.argv[1:6]
requests = int(requests)
atomic = {int(a, 16) for a in open(atomics_file)}
names, obj, addr, after_call = {}, None, 0, False
total = atomics = 0
for line in open(dump):
    line = line.rstrip("\n")
    m = re.match(r"(c?)ob=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if not m.group(1):
            obj = names.get(m.group(2))
        continue
    if line.startswith("calls="):
        after_call = True  # the next line is the call's inclusive cost
        continue
    if not line or not (line[0].isdigit() or line[0] in "+-*"):
        continue
    fields = line.split()
    position = fields[0]
    if position.startswith("0x"):
        addr = int(position, 16)
    elif position[0] in "+-":
        step = int(position[1:], 16) if position[1:].startswith("0x") else int(position[1:])
        addr += step if position[0] == "+" else -step
    if after_call:
        after_call = False
        continue
    if len(fields) < 3:
        continue
    count = int(fields[2])
    total += count
    if obj and obj.endswith(binary.split("/")[-1]) and addr in atomic:
        atomics += count
print(f"{name:8} {requests:7d} requests  {total // requests:7d} instructions/request  "
      f"{atomics / requests:6.1f} atomic RMW/request (in the binary itself)")
PY
}

measure rampart "$RMP" "$RAMPART" "$RAMPART" serve --config "$WORK/rampart.toml" --threads 1
measure nginx "$NGX" "$NGINX" "$NGINX" -c "$WORK/proxy.conf" -p "$WORK"
