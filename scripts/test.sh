#!/usr/bin/env bash
# The test command: starts Azurite (table service) for the Table Storage tests, runs every
# test of the workspace, and stops Azurite again, whatever the outcome.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p lucius-core  # extra arguments go to cargo test
#
# PROPTEST_CASES (default 10000 per state machine) and SIM_SEEDS (default 1000) size the
# property tests and the simulation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=0
if ! scripts/azurite.sh status >/dev/null 2>&1; then
  scripts/azurite.sh start
  started=1
fi
cleanup() { if [[ $started == 1 ]]; then scripts/azurite.sh stop || true; fi; }
trap cleanup EXIT

export LUCIUS_TEST_TABLE_CONNECTION="${LUCIUS_TEST_TABLE_CONNECTION:-UseDevelopmentStorage=true}"
cargo test --workspace "$@"

# The examples, run as a user would (each exits non-zero if its job does not succeed).
if [[ $# -eq 0 ]]; then
  cargo run -q --example quickstart
  cargo run -q --example custom_store
  cargo run -q --example embed_axum --features http
fi
