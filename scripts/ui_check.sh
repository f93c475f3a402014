#!/usr/bin/env bash
# `make ui-check` (not in CI): after `make demo`, screenshots of the Dagster UI and a check that
# every asset is materialized and no page shows an error.  Installs Debian's chromium and
# chromium-driver, and selenium into the venv, when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  echo "ui-check: installing chromium and chromium-driver (apt-get)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
"$PY" -c "import selenium" 2>/dev/null || "$PY" -m pip install -q selenium
exec "$PY" "$ROOT/scripts/ui_check.py"
