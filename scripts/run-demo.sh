#!/bin/sh
# `make run`: the bundled mock upstream on 127.0.0.1:8421 and llmuxd on the demo config
# (127.0.0.1:8420), in the foreground. Ctrl-C stops both.
set -e
BUILD=${1:-build}
"$BUILD/mock_upstream" --listen 127.0.0.1:8421 --quiet > "$BUILD/mock.port" &
MOCK=$!
trap 'kill $MOCK 2>/dev/null; wait $MOCK 2>/dev/null' EXIT INT TERM
sleep 0.2
cat <<'MSG'

llmux demo: gateway on http://127.0.0.1:8420, mock upstream on :8421. Try, in another shell:

  curl -s http://127.0.0.1:8420/v1/chat/completions -H 'Content-Type: application/json' -d '{"model":"demo","messages":[{"role":"user","content":"Hello!"}]}'

  (models: demo, demo-claude, demo-fallback; add "stream": true for SSE; or: build/llmux chat -m demo "Hello!")

MSG
"$BUILD/llmuxd" -c conf/llmux.demo.yaml
