#!/bin/sh
# genbound's store gets its own database next to Dagster's, on the same server, and neither
# database is open to PUBLIC: only their owner (POSTGRES_USER) and roles granted CONNECT (such as
# the read-only genbound_reader that `genbound setup-db` creates on the genbound database) connect.
#
# The postgres image runs the scripts in /docker-entrypoint-initdb.d once, when its data volume is
# first initialised, with POSTGRES_USER / POSTGRES_DB set; genbound_assets_tests/
# test_production_config.py runs this file the same way against its test server.  Idempotent: an
# existing database is left alone.
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="${GENBOUND_DB:-genbound}" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', datname)
FROM pg_database WHERE datname IN (:'db', current_database())\gexec
SQL
