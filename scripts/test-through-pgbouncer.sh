#!/usr/bin/env bash
# Runs the whole test suite a second time through PgBouncer in transaction pool mode (Neon's '-pooler'
# endpoint): a fresh embedded server, PgBouncer in front of it on a loopback port, TEST_DATABASE_URL at
# PgBouncer and SONY_RAG_TRANSACTION_POOLER=true. Arguments go to pytest (default: -q). Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    echo "pgbouncer is not installed (Debian: apt-get install -y pgbouncer)" >&2
    exit 2
fi
exec "${PYTHON:-python}" tests/pgbouncer.py "$@"
