# Shared by the bench scripts (sourced, not run): installing what is missing, and a work
# directory whose processes ($PIDS) are stopped and which is removed on exit. A script that
# has more to stop defines `stop_more`, which cleanup calls first.

# Installs the given Debian packages, if any are given.
install_missing() {
  (($#)) || return 0
  echo "installing $* from Debian packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if declare -F stop_more >/dev/null; then stop_more; fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

WORK=$(mktemp -d)
PIDS=()
trap cleanup EXIT

# nginx answering `return 200 "ok\n"` on ADDR, one worker: the fixed upstream of the
# benchmarks. Writes $WORK/upstream.conf.
write_return_200_upstream() { # ADDR
  cat >"$WORK/upstream.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $1; location / { return 200 "ok\n"; } }
}
CONF
}

# nginx as a keep-alive reverse proxy on LISTEN to UPSTREAM, one worker, logging every
# request as rampart's default access log does. With a third argument, `master_process off`
# (one process, for callgrind). Writes $WORK/proxy.conf.
write_nginx_proxy() { # LISTEN UPSTREAM [single]
  cat >"$WORK/proxy.conf" <<CONF
worker_processes 1;
${3:+master_process off;}
daemon off;
pid $WORK/proxy.pid;
error_log $WORK/proxy-error.log warn;
events { worker_connections 4096; }
http {
  access_log /dev/null combined;
  keepalive_requests 1000000;
  upstream app { server $2; keepalive 64; keepalive_requests 1000000; }
  server {
    listen $1;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
}

# rampart's defaults on LISTEN (admin on ADMIN) in front of UPSTREAM, but with per-IP limits
# no single benchmark client reaches: the limiter still decides every request, and every
# request is proxied. Writes $WORK/rampart.toml.
write_rampart_proxy() { # LISTEN ADMIN UPSTREAM
  cat >"$WORK/rampart.toml" <<CONF
[server]
listen = "$1"
admin = "$2"
[rate_limit]
limits = [
  { name = "ip-per-minute", key = "ip", rate = 1000000000, per = "1m" },
  { name = "ip-per-hour", key = "ip", rate = 1000000000, per = "1h" },
]
[upstreams.default]
servers = ["http://$3"]
CONF
}
