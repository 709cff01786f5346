#!/usr/bin/env bash
# The test command: JS unit tests (node --test) then the Python suite (pytest). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
if [ -d web/test ]; then
    node --test web/test/
fi
.venv/bin/python -m pytest "$@"
