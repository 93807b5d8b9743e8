#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the test suite. Exit status: pytest's, except that
# "no tests collected" (pytest's 5) counts as a failure too.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "scripts/test.sh: pytest collected no tests" >&2
  exit 1
fi
exit $status
