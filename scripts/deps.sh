#!/bin/sh
# Installs what llmux needs to build and run, only what is missing: Debian packages (as root
# it runs apt-get; otherwise it names what is missing and fails). With --test it also installs
# what the tests need: Node.js, the OpenAPI validator the docs test runs (into tests/openapi/)
# and the official Anthropic and OpenAI SDKs test_sdk drives (into tests/sdk/), from npm, each
# pinned by its package-lock.json. Afterwards nothing needs the network.
set -e
cd "$(dirname "$0")/.."
PKGS="build-essential pkg-config clang libclang-rt-14-dev libev-dev libcurl4-openssl-dev
libjansson-dev libyaml-dev libcmocka-dev libsystemd-dev libhiredis-dev libssl-dev zlib1g-dev
curl python3 systemd"
# What only the tests and `make deb` use: a real Redis, nghttpx in front of the mock for the
# HTTP/2 tests, certificates, the package tools, the docs test's YAML and schema readers.
TEST_PKGS="redis-server nghttp2-proxy openssl dpkg-dev lintian file python3-yaml
python3-jsonschema"
TESTING=""
[ "${1:-}" = "--test" ] && TESTING=1 && PKGS="$PKGS $TEST_PKGS"
# Node.js runs the validator; a machine with npm from elsewhere keeps its own.
[ -n "$TESTING" ] && ! command -v npm >/dev/null 2>&1 && PKGS="$PKGS nodejs npm"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "llmux: missing Debian packages:$missing" >&2
        echo "llmux: run as root, or: sudo apt-get install$missing" >&2
        exit 1
    fi
    echo "llmux: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ -n "$TESTING" ] && [ ! -x tests/openapi/node_modules/.bin/validate-api ]; then
    echo "llmux: installing the OpenAPI validator (npm ci in tests/openapi)"
    npm ci --prefix tests/openapi --no-audit --no-fund --loglevel=error >/dev/null
fi
if [ -n "$TESTING" ] && [ ! -d tests/sdk/node_modules/@anthropic-ai/sdk ]; then
    echo "llmux: installing the Anthropic and OpenAI SDKs (npm ci in tests/sdk)"
    npm ci --prefix tests/sdk --no-audit --no-fund --loglevel=error >/dev/null
fi
