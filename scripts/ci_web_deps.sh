#!/usr/bin/env bash
# Install the headless browser that tests/test_web.py drives: Debian's chromium (+ chromedriver for Selenium users).
# Idempotent and quiet: does nothing when both are already there. Python packages come from the extras:
#   pip install -e '.[test]'   (pulls in the web extra: gradio, and playwright; never run `playwright install`)
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version >/dev/null 2>&1 || { echo "ci_web_deps: chromium installed but does not start" >&2; exit 1; }
