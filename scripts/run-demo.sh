#!/usr/bin/env bash
# `make run`: the mock Rocket.Chat (three hooks, one per severity) and the relay wired to it, on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${VENV_PYTHON:-.venv/bin/python}"
MOCK_PORT="${MOCK_PORT:-9999}"
RELAY_PORT="${PORT:-8093}"

# wait_until_answers URL PID WHAT: poll URL for at most 15 s; stop the demo if the process PID has died.
wait_until_answers() {
  for _ in $(seq 150); do
    if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('$1', timeout=1)" 2>/dev/null; then
      return 0
    fi
    kill -0 "$2" 2>/dev/null || { echo "$3" >&2; exit 1; }
    sleep 0.1
  done
}

# A port already taken (another demo, another program) would leave the relay posting to whatever holds it.
for port in "$MOCK_PORT" "$RELAY_PORT"; do
  if ! "$PYTHON" -c "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $port))" 2>/dev/null; then
    echo "port $port on 127.0.0.1 is in use: stop what holds it, or pick others with MOCK_PORT=... PORT=..." >&2
    exit 1
  fi
done

"$PYTHON" mock_server.py --host 127.0.0.1 --port "$MOCK_PORT" &
mock_pid=$!
# The mock first: the relay would otherwise post to whatever else holds the port.
wait_until_answers "http://127.0.0.1:${MOCK_PORT}/_mock/health" "$mock_pid" \
  "the mock Rocket.Chat did not start (is port ${MOCK_PORT} free? MOCK_PORT=... picks another)"
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
# SMS escalation through the mock's Twilio (same port): one demo recipient, paged at once for critical alerts.
# The mock's fixed demo account (mock_twilio.py); a real TWILIO_* in the shell or .env is overridden here.
export TWILIO_API_URL="http://127.0.0.1:${MOCK_PORT}" TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef \
  TWILIO_AUTH_TOKEN=mock-twilio-auth-token TWILIO_FROM_NUMBER=+15017122661 SMS_RECIPIENTS=+15555550100 \
  PUBLIC_URL="http://127.0.0.1:${RELAY_PORT}" TWILIO_API_KEY_SID= TWILIO_API_KEY_SECRET= TWILIO_MESSAGING_SERVICE_SID=
"$PYTHON" rocketchat_webhook.py &
relay_pid=$!

wait_until_answers "http://127.0.0.1:${RELAY_PORT}/health" "$relay_pid" "the relay did not start; see the lines above"

cat <<MSG

  rocketchat-webhook is listening on http://127.0.0.1:${RELAY_PORT}, wired to a mock Rocket.Chat on :${MOCK_PORT}.
  In another terminal, send the test alert:

    curl -X POST http://127.0.0.1:${RELAY_PORT}/webhook -H 'Content-Type: application/json' -d @test-alert.json

  Where to look:
    http://127.0.0.1:${RELAY_PORT}/             the relay's status page (firing alerts, deliveries, pacing; live)
    http://127.0.0.1:${MOCK_PORT}/             the mock Rocket.Chat's channels, and the SMS its mock Twilio took
                                                (the critical test alert pages the demo number +15555550100)
    http://127.0.0.1:${RELAY_PORT}/api/v1/alerts   the alert journal as JSON
  The mock also prints each message it receives below. Ctrl-C stops both.

MSG
wait "$relay_pid"
