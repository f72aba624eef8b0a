#!/usr/bin/env bash
# One entry point for a fresh machine: `./bootstrap.sh app` starts the studio, `./bootstrap.sh test` runs
# the test suite. Both set up what is missing first (venv, requirements, Debian packages) and reuse
# whatever is already there, so a second call is fast.
set -euo pipefail
cd "$(dirname "$0")"

mode="${1:-}"; shift || true
case "$mode" in
  app|test) ;;
  *) echo "usage: ./bootstrap.sh app [launch.py args] | ./bootstrap.sh test [pytest args]" >&2; exit 2 ;;
esac

FMNIST=/usr/share/datasets/fashion-mnist
PY="${PYTHON:-python3}"
apt_updated=0

apt_install() {  # apt_install <package>: only as root, only where apt exists
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: cannot install Debian package '$1' (not root or no apt); install it yourself." >&2
    return 0
  fi
  if [ "$apt_updated" -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST/train-images-idx3-ubyte" ]; then
  apt_install dataset-fashion-mnist
fi
if [ "$mode" = test ] && ! command -v chromium >/dev/null; then
  apt_install chromium  # the browser tests drive Debian's chromium through playwright
fi

if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "error: H-PD Studio needs Python 3.11 (set PYTHON=/path/to/python3.11)." >&2; exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
want=$(sha256sum requirements.txt | cut -d' ' -f1)
have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  # torch/torchvision first: grad-cam pulls torchvision and only the pinned pair imports together.
  .venv/bin/pip install -q --disable-pip-version-check "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi

export GRADIO_ANALYTICS_ENABLED=False
if [ "$mode" = app ]; then
  exec .venv/bin/python launch.py "$@"
else
  exec .venv/bin/python -m pytest -q "$@"
fi
