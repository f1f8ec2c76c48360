#!/bin/sh
# Installs the Debian packages llmux needs to build and test, only those missing.
# As root it runs apt-get; otherwise it names what is missing and fails.
set -e
PKGS="build-essential pkg-config clang libclang-rt-14-dev libev-dev libcurl4-openssl-dev
libjansson-dev libyaml-dev libcmocka-dev libsystemd-dev curl python3 systemd"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
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
