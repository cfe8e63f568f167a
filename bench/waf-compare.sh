#!/usr/bin/env bash
# Detection, false positives and throughput, side by side: Apache + ModSecurity 2 + OWASP CRS
# (Debian packages) at paranoia levels 1 and 2, and `rampart serve` with its defaults, each in
# front of the same nginx upstream, fed the same corpus as `GET /?q=<payload>` (blocked =
# HTTP 403, anomaly threshold 5 everywhere).
#
# Usage: bench/waf-compare.sh [CORPUS]   (default ../shared/corpus/waf/dev.jsonl)
#   TARGETS="crs1 crs2 rampart"  which to run;  WORKERS=8  client processes;
#   DECISIONS=DIR  also writes DIR/<target>.jsonl, the status each payload got.
# Needs root for apt-get when apache2, mod_security2, the CRS or nginx are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS="${1:-../shared/corpus/waf/dev.jsonl}"
TARGETS="${TARGETS:-crs1 crs2 rampart}"
WORKERS="${WORKERS:-8}"
[ -z "${DECISIONS:-}" ] || mkdir -p "$DECISIONS"

need=()
[ -e /usr/lib/apache2/modules/mod_security2.so ] || need+=(apache2 libapache2-mod-security2)
[ -d /usr/share/modsecurity-crs/rules ] || need+=(modsecurity-crs)
command -v nginx >/dev/null || need+=(nginx)
source bench/common.sh
install_missing "${need[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
APACHE=/usr/sbin/apache2
MODS=/usr/lib/apache2/modules

cargo build --release -q -p rampart
RAMPART=$PWD/target/release/rampart

chmod 755 "$WORK"
stop_more() {
  for conf in "$WORK"/apache-*.conf; do
    [ -e "$conf" ] && "$APACHE" -f "$conf" -k stop 2>/dev/null || true
  done
}

UP=127.0.0.1:18101
declare -A PORT=([crs1]=18111 [crs2]=18112 [rampart]=18113)

write_return_200_upstream "$UP"
"$NGINX" -c "$WORK/upstream.conf" &
PIDS+=($!)

apache_conf() { # level port
  local dir="$WORK/crs$1"
  mkdir -p "$dir/tmp" "$dir/data"
  chown -R www-data:www-data "$dir" 2>/dev/null || true
  cat >"$WORK/apache-$1.conf" <<CONF
ServerRoot /etc/apache2
ServerName localhost
Listen 127.0.0.1:$2
PidFile $dir/apache.pid
ErrorLog $dir/error.log
LogLevel error
User www-data
Group www-data
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule unique_id_module $MODS/mod_unique_id.so
LoadModule security2_module $MODS/mod_security2.so
LoadModule proxy_module $MODS/mod_proxy.so
LoadModule proxy_http_module $MODS/mod_proxy_http.so
ServerLimit 4
ThreadsPerChild 64
MaxRequestWorkers 256
KeepAlive On
MaxKeepAliveRequests 0
SecRuleEngine On
SecRequestBodyAccess On
SecResponseBodyAccess Off
SecAuditEngine Off
SecTmpDir $dir/tmp
SecDataDir $dir/data
SecPcreMatchLimit 100000
SecPcreMatchLimitRecursion 100000
Include /etc/modsecurity/crs/crs-setup.conf
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level=$1"
Include /usr/share/modsecurity-crs/rules/*.conf
ProxyPass / http://$UP/
CONF
}

cat >"$WORK/rampart.toml" <<CONF
[server]
listen = "127.0.0.1:${PORT[rampart]}"
admin = "127.0.0.1:18114"

[upstreams.default]
servers = ["http://$UP"]

# One client sends every attack: no rate limits and no bans, so each answer is inspection's.
[bans]
enabled = false

[[routes]]
prefix = "/"
upstream = "default"
rate_limits = []
CONF

sleep 0.5
RESULTS=()
for target in $TARGETS; do
  case $target in
    crs1 | crs2)
      level=${target#crs}
      apache_conf "$level" "${PORT[$target]}"
      "$APACHE" -f "$WORK/apache-$level.conf" -k start
      ;;
    rampart)
      "$RAMPART" serve --config "$WORK/rampart.toml" --log warn >"$WORK/rampart.log" 2>&1 &
      PIDS+=($!)
      ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:${PORT[$target]}/?q=hello" && break
    sleep 0.2
  done
  echo "== $target: sending $(wc -l <"$CORPUS") payloads" >&2
  python3 bench/waf_client.py "$CORPUS" "127.0.0.1:${PORT[$target]}" "$WORKERS" \
    ${DECISIONS:+"$DECISIONS/$target.jsonl"} >"$WORK/$target.json"
  RESULTS+=("$target=$WORK/$target.json")
  if [[ $target == crs* ]]; then "$APACHE" -f "$WORK/apache-${target#crs}.conf" -k stop; sleep 1; fi
done

python3 - "${RESULTS[@]}" <<'PY'
import json, sys
runs = [(a.split("=", 1)[0], json.load(open(a.split("=", 1)[1]))) for a in sys.argv[1:]]
names = [n for n, _ in runs]
def row(label, cells):
    print(f"{label:<22}" + "".join(f"{c:>14}" for c in cells))
row("", names)
print("detection (attacks blocked)")
fams = sorted({f for _, r in runs for f in r["families"]})
for f in fams:
    row("  " + f, [f'{100*r["families"][f]["flagged"]/r["families"][f]["total"]:.1f}%' if f in r["families"] else "-" for _, r in runs])
def total(r):
    t = sum(c["total"] for c in r["families"].values()); k = sum(c["flagged"] for c in r["families"].values())
    return f"{100*k/t:.1f}%"
row("  all attacks", [total(r) for _, r in runs])
print("false positives (benign blocked)")
srcs = sorted({s for _, r in runs for s, b in r["benign_sources"].items() if b})
for s in srcs:
    row("  " + s, [f'{100*r["sources"][s]["flagged"]/r["sources"][s]["total"]:.2f}%' for _, r in runs])
row("requests/s", [f'{r["requests_per_second"]:.0f}' for _, r in runs])
row("other statuses", [",".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()) if k not in ("200", "403")) or "-" for _, r in runs])
PY
