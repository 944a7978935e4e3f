#!/usr/bin/env bash
# Install (Debian packages) and start the production twins that tests use, on loopback only.
#   test-services.sh up     install if missing (Postgres, Redis), start Postgres, create the platformq role
#   test-services.sh down   stop Postgres
# moto_server (the S3 endpoint; MinIO cannot be installed here), Redis, the MLflow tracking
# server, Spark standalone and Ray clusters are started per test by the tests themselves, each
# on a free 127.0.0.1 port (tests/integration/servers.py).
set -euo pipefail

PG_USER=platformq
PG_PASSWORD=platformq

have_postgres() { command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_lsclusters -h 2>/dev/null)" ]; }

up() {
  missing=()
  have_postgres || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    # the package starts a system Redis on 6379: the tests start their own on loopback ports
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
    service redis-server stop >/dev/null 2>&1 || true
  fi
  read -r version cluster _ <<<"$(pg_lsclusters -h | head -n 1)"
  conf="/etc/postgresql/$version/$cluster/postgresql.conf"
  # loopback only
  grep -q "^listen_addresses = '127.0.0.1'" "$conf" || echo "listen_addresses = '127.0.0.1'" >> "$conf"
  pg_ctlcluster "$version" "$cluster" start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 0.5; done
  pg_isready -h 127.0.0.1
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD'\""
}

down() {
  if have_postgres; then
    read -r version cluster _ <<<"$(pg_lsclusters -h | head -n 1)"
    pg_ctlcluster "$version" "$cluster" stop || true
  fi
}

"${1:-up}"
