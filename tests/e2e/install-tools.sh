#!/usr/bin/env bash
# Installs the real programs that tests/e2e and tests/test_deploy_files.py run (the browser tests' headless Chromium
# and its driver too, and the redis-server that tests/redis_server.py starts for the Redis store's tests), with
# Debian's packages, when they are missing and this runs as root (as CI does). Otherwise it says what is missing and
# how to install it; the tests then skip (or fail, under REQUIRE_E2E=1).
set -euo pipefail

# program -> Debian package that ships it
declare -A PACKAGE_OF=(
  [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager
  [prometheus]=prometheus
  [promtool]=prometheus
  [docker-compose]=docker-compose
  [systemd-analyze]=systemd
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [redis-server]=redis-server
)
# Daemons the packages bring, none of which may be left running by the install.
DAEMONS=(prometheus prometheus-alertmanager prometheus-node-exporter redis-server)

missing_packages() {
  local program
  for program in "${!PACKAGE_OF[@]}"; do
    command -v "$program" >/dev/null 2>&1 || echo "${PACKAGE_OF[$program]}"
  done | sort -u
}

mapfile -t packages < <(missing_packages)
if [ "${#packages[@]}" -eq 0 ]; then
  exit 0
fi
hint="apt-get install --no-install-recommends ${packages[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-tools: missing ${packages[*]}; not root, so not installing. Run: sudo $hint" >&2
  echo "install-tools: until then the end-to-end, browser, deploy-file and Redis store tests skip" \
       "(REQUIRE_E2E=1 makes that a failure)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tools: missing ${packages[*]} and no apt-get here; install them by hand" >&2
  exit 0
fi

# Debian's maintainer scripts start a package's service through invoke-rc.d, which asks policy-rc.d first: exit
# status 101 forbids it. Container images usually have one already; otherwise one is put there for this install.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# rocketchat-webhook tests/e2e/install-tools.sh: no service starts during this install\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  own_policy=1
fi
cleanup() { if [ -n "$own_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "install-tools: installing ${packages[*]} (for tests/e2e, tests/test_deploy_files.py and the Redis store tests)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

mapfile -t still_missing < <(missing_packages)
if [ "${#still_missing[@]}" -ne 0 ]; then
  echo "install-tools: still missing after the install: ${still_missing[*]}" >&2
  exit 1
fi
for daemon in "${DAEMONS[@]}"; do
  if pids=$(pgrep -f "^(/usr/s?bin/)?$daemon( |\$)"); then
    echo "install-tools: the install left $daemon running (pid $(echo $pids)); stop its service:" \
         "systemctl disable --now $daemon" >&2
    exit 1
  fi
done
