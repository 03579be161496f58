#!/usr/bin/env bash
# `make run`: the mock Rocket.Chat (three hooks, one per severity) and the relay wired to it, on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${VENV_PYTHON:-.venv/bin/python}"
MOCK_PORT="${MOCK_PORT:-9999}"
RELAY_PORT="${PORT:-8093}"

"$PYTHON" mock_server.py --host 127.0.0.1 --port "$MOCK_PORT" &
mock_pid=$!
# The mock first: the relay would otherwise post to whatever else holds the port.
for _ in $(seq 100); do
  if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${MOCK_PORT}/_mock/health', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$mock_pid" 2>/dev/null || { echo "the mock Rocket.Chat did not start (is port ${MOCK_PORT} free? MOCK_PORT=... picks another)" >&2; exit 1; }
  sleep 0.1
done
stop() {
  kill "$mock_pid" "${relay_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

# The mock's default hooks: /hooks/<severity>/<severity>-token (fake tokens, for the demo only). The demo routes by
# severity: a ROUTES_FILE from the shell or .env is left out (an empty value wins over .env).
export HOST=127.0.0.1 PORT="$RELAY_PORT" ROUTES_FILE=
for severity in critical warning info; do
  upper=$(echo "$severity" | tr '[:lower:]' '[:upper:]')
  export "ROCKETCHAT_WEBHOOK_${upper}=http://127.0.0.1:${MOCK_PORT}/hooks/${severity}/${severity}-token"
done
"$PYTHON" rocketchat_webhook.py &
relay_pid=$!

# Wait until the relay answers, at most 15 s.
for _ in $(seq 150); do
  if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:${RELAY_PORT}/health', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$relay_pid" 2>/dev/null || { echo "the relay did not start; see the lines above" >&2; exit 1; }
  sleep 0.1
done

cat <<MSG

  rocketchat-webhook is listening on http://127.0.0.1:${RELAY_PORT}, wired to a mock Rocket.Chat on :${MOCK_PORT}.
  In another terminal, send the test alert:

    curl -X POST http://127.0.0.1:${RELAY_PORT}/webhook -H 'Content-Type: application/json' -d @test-alert.json

  The mock prints each message it receives below. Ctrl-C stops both.

MSG
wait "$relay_pid"
