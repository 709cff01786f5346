#!/usr/bin/env bash
# The test command. pytest runs everything, the JS unit tests included: tests/web/test_web_js.py writes their
# Python reference data (diffusers schedulers, tokenizer ids) and runs `node --test web/test/`. Args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
.venv/bin/python -m pytest "$@"
