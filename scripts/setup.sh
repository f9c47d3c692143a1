#!/usr/bin/env bash
# make setup: the Debian packages, then .venv from the pinned requirements. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(mariadb-server mariadb-client memcached sasl2-bin libsasl2-modules libmariadb-dev
          pkg-config gcc chromium wrk nginx git python3.11-venv)
# python3.11-venv: the deploy rehearsal builds its venv from Debian's /usr/bin/python3.11, which the
# webapp user it runs the app as can reach (a Python under /root is out of its reach).
PYTHON=${PYTHON:-python3.11}

# VENV=/tmp/v make setup builds the virtualenv elsewhere (a fresh one, to time it).
VENV=${VENV:-.venv}

say() { printf '==> %s\n' "$*"; }
. scripts/phase.sh
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found. The workshop needs exactly Python 3.11 (pylibmc 1.6.3 has no wheels for 3.12+); install it, or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != 3.11 ]; then
  echo "setup: $PYTHON is Python $version; the workshop needs exactly 3.11 (pylibmc 1.6.3 has no wheels for 3.12+)" >&2
  exit 1
fi

# mysqlclient compiles against the Python headers; a Debian python3.11 keeps them in a -dev package.
include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || PACKAGES+=(python3.11-dev)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "Debian packages to install: ${missing[*]}"
  phase "apt-get update" as_root apt-get update
  phase "apt-get install (${#missing[@]} packages)" as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "Debian packages: all ${#PACKAGES[@]} present"
fi

stamp=$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp" ]; then
  say "$VENV: up to date"
else
  if [ ! -x "$VENV/bin/python" ]; then
    phase "creating $VENV with $PYTHON" "$PYTHON" -m venv "$VENV"
  fi
  # Two groups: what the apps run on, then the development tools (first time: a few minutes).
  phase "pip install -r requirements.txt (the apps' packages)" \
    "$VENV/bin/python" -m pip install --progress-bar off -r requirements.txt
  phase "pip install -r requirements-dev.txt (tests, browser driver, notebooks)" \
    "$VENV/bin/python" -m pip install --progress-bar off -r requirements-dev.txt
  echo "$stamp" > "$VENV/.stamp"
fi
say "setup done"
