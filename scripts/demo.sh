#!/usr/bin/env bash
# The README's first command: installs everything, makes the example model and dataset, starts the
# service in standalone mode on a free port, submits a real analysis, prints the summary and where
# the JSON and HTML reports are, and stops the service.
#
# Usage: scripts/demo.sh
#   NEURONSCOPE_VENV       virtual environment to install into and use (default .venv)
#   NEURONSCOPE_DEMO_DIR   where the example, the service data and the reports go (default .neuronscope/demo)
#   NEURONSCOPE_SKIP_INSTALL=1  use the venv as it is
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NEURONSCOPE_VENV:-.venv}"
out="${NEURONSCOPE_DEMO_DIR:-.neuronscope/demo}"

if [ "${NEURONSCOPE_SKIP_INSTALL:-0}" != "1" ]; then
  echo "==> installing into $venv (first run: a few minutes)"
  bash scripts/install.sh "$venv"
fi
if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing redis-server (the standalone service runs a private one)"
  (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || true
fi
py="$venv/bin/python"
ns="$venv/bin/neuronscope"
mkdir -p "$out"

echo "==> making the example: a ReLU MLP trained on scikit-learn's digits, exported to ONNX"
"$ns" example --out-dir "$out"

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
log="$out/serve.log"
echo "==> starting the service on $url (log: $log)"
"$ns" serve --host 127.0.0.1 --port "$port" --data-dir "$out/data" >"$log" 2>&1 &
server=$!
stop_server() {
  if kill -0 "$server" 2>/dev/null; then
    echo "==> stopping the service"
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
}
trap stop_server EXIT

"$py" - "$url" "$server" "$log" <<'EOF'
import os, sys, time
from neuronscope.client import Client

url, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 180
with Client(url, timeout=5) as client:
    while not client.ready():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"the service stopped while starting; the end of {log}:\n" + open(log).read()[-3000:])
        if time.monotonic() > deadline:
            sys.exit(f"the service was not ready within 180 s; see {log}")
        time.sleep(0.5)
EOF

echo "==> submitting the analysis and waiting for it"
status=0
"$ns" submit "$out/digits_mlp.onnx" "$out/digits_test.npz" --server "$url" --wait --timeout 900 \
  --out "$out/report.json" --html "$out/report.html" || status=$?
if [ "$status" -ne 0 ]; then
  echo "neuronscope submit failed with exit code $status; the service log is $log" >&2
  exit "$status"
fi
echo
echo "Open the HTML report in a browser: file://$(cd "$out" && pwd)/report.html"
echo "Compare two model versions:  $ns example --variant dying --out-dir $out && $ns analyze $out/digits_mlp_dying.onnx $out/digits_test.npz --out $out/dying.json && $ns compare $out/report.json $out/dying.json"
