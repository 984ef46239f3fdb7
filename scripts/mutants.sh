#!/usr/bin/env bash
# Mutation testing of the state machines and the engine (issue 12): installs cargo-mutants
# if it is missing, then mutates job.rs, step.rs, outbox.rs, lease.rs, ownership.rs and
# engine/ and runs lucius-core's tests (unit, engine and property tests) and the facade's
# simulations against each mutant. CI does not run it: it takes hours on two cores.
#
#   scripts/mutants.sh                 # everything (about 570 mutants)
#   scripts/mutants.sh -f lucius-core/src/step.rs   # extra arguments go to cargo mutants
#   CORE_ONLY=1 scripts/mutants.sh --iterate        # lucius-core's own tests only (no
#                                                   # facade simulations): ~10 s a mutant
#                                                   # instead of minutes; --iterate skips
#                                                   # what an earlier run caught
#
# Results land in mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt).
# PROPTEST_CASES and SIM_SEEDS are lowered so one mutant's tests take seconds, not
# minutes; a mutant the full counts would catch but these miss shows up as missed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo-mutants >/dev/null; then
  cargo install cargo-mutants --locked --version 27.1.0
fi

export PROPTEST_CASES="${PROPTEST_CASES:-1000}"
export SIM_SEEDS="${SIM_SEEDS:-100}"

files=()
if [[ " $* " != *" -f "* && " $* " != *" --file "* ]]; then
  for f in job step outbox lease ownership; do files+=(-f "lucius-core/src/$f.rs"); done
  files+=(-f 'lucius-core/src/engine/*.rs')
fi

tests=(--test-package lucius-core)
if [[ -z "${CORE_ONLY:-}" ]]; then tests+=(--test-package lucius); fi

# cargo-mutants refuses --timeout twice: the default applies only when none is given.
timeout=(--timeout 300)
if [[ " $* " == *" --timeout "* || " $* " == *" --timeout="* ]]; then timeout=(); fi

exec cargo mutants --package lucius-core "${files[@]}" \
  -e 'lucius-core/src/engine/*tests.rs' -e 'lucius-core/src/ownership/tests.rs' \
  "${tests[@]}" "${timeout[@]}" "$@"
