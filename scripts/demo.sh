#!/usr/bin/env bash
# `make demo`: a store in demo-out/, the built-in example set, then its status (re-runs add nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

ARES=".venv/bin/ares"
DB="demo-out/ares.db"
mkdir -p demo-out

"$ARES" --db "$DB" init
"$ARES" --db "$DB" import example
"$ARES" --db "$DB" status
