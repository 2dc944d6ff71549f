#!/usr/bin/env bash
# Regenerate constraints.txt from a development venv that `make install` built and the suite passed in.
# torch and the two packages it brings are installed without resolution (see the Makefile), and
# typing_extensions is put back at the version TensorFlow 2.12 declares, so the file resolves as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
{
  echo "# Versions the development environment resolved to (pip freeze), given to pip as constraints so a fresh"
  echo "# venv installs without backtracking (pip gave up with resolution-too-deep on the bare ranges)."
  echo "# Only constrains: the demo's \`.[ml]\` install takes the subset it needs. Regenerate: scripts/lock.sh."
  "$venv/bin/pip" freeze --exclude-editable | grep -viE "^(torch|filelock|fsspec)==" \
    | sed 's/^typing_extensions==.*/typing_extensions==4.5.0/'
} > constraints.txt
