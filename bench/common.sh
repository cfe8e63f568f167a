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
