#!/usr/bin/env bash
# Render `genbound report` and take a screenshot of it in headless Chromium (not run in CI).
#
#   scripts/report_screenshot.sh [REPORT.html] [OUT.png]
#
# Defaults: writes the report with `genbound report` (into the data dir), saves the screenshot
# as <data dir>/report.png.  Installs Debian's `chromium` with apt-get if it is missing.
# The window is tall so that the whole page fits in one image (--window-size=W,H).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
DATA_DIR="$(cd "$ROOT" && "$PY" -c 'from genbound_assets.storage import data_dir; print(data_dir())')"

REPORT="${1:-}"
if [ -z "$REPORT" ]; then
  REPORT="$(cd "$ROOT" && "$PY" -m genbound_assets.cli report)"
fi
OUT="${2:-$DATA_DIR/report.png}"
HEIGHT="${HEIGHT:-9000}"

CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$CHROMIUM" ]; then
  echo "report_screenshot: installing chromium (apt-get)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  CHROMIUM="$(command -v chromium)"
fi

PROFILE="$(mktemp -d)"
trap 'rm -rf "$PROFILE"' EXIT
mkdir -p "$(dirname "$OUT")"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$PROFILE" --window-size="1100,$HEIGHT" --hide-scrollbars \
  --virtual-time-budget=15000 --screenshot="$OUT" "file://$(realpath "$REPORT")" 2>/dev/null
echo "$OUT"
