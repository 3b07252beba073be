#!/usr/bin/env bash
# Runs the whole test suite: gofmt, go vet and `go test -race` for every
# module in the repository, against real redis-server processes (the tests
# start their own) and a real PostgreSQL.
#
# It needs Go, redis-server (Redis 7+) and a PostgreSQL 15+ server reachable
# at $CACHEASIDE_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test?sslmode=disable). Where it can
# (root on Debian/Ubuntu) it installs and starts what is missing; otherwise
# it stops and says exactly what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_updated=
apt_install() {
	if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v go >/dev/null || die "Go is not installed: install Go 1.26 or newer from https://go.dev/dl/"

say "checking redis-server"
if ! command -v redis-server >/dev/null; then
	can_apt || die "redis-server not found: install Redis 7+ (Debian/Ubuntu: sudo apt-get install redis-server)"
	echo "installing redis-server with apt-get"
	apt_install redis-server
fi
redis-server --version

default_url='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
export CACHEASIDE_TEST_DATABASE_URL="${CACHEASIDE_TEST_DATABASE_URL:-$default_url}"
say "checking PostgreSQL at ${CACHEASIDE_TEST_DATABASE_URL%%\?*}"
if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then
	can_apt || die "PostgreSQL not found: install PostgreSQL 15+ (Debian/Ubuntu: sudo apt-get install postgresql) or set CACHEASIDE_TEST_DATABASE_URL"
	echo "installing postgresql with apt-get"
	apt_install postgresql
fi
pg_listening() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
pg_ok() { psql "$CACHEASIDE_TEST_DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; }
if ! pg_ok && ! pg_listening && [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
	echo "starting the local PostgreSQL cluster"
	for v in /etc/postgresql/*; do
		pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
	done
	for _ in $(seq 1 30); do pg_listening && break; sleep 1; done
fi
if ! pg_ok && [ "$CACHEASIDE_TEST_DATABASE_URL" = "$default_url" ] && [ "$(id -u)" = 0 ] &&
	command -v runuser >/dev/null && runuser -u postgres -- psql -Atqc 'select 1' >/dev/null 2>&1; then
	# A fresh Debian server allows no password-less TCP login: make a role
	# and a database of our own for the tests.
	echo "creating the PostgreSQL role and database cacheaside_test"
	runuser -u postgres -- psql -q -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cacheaside') THEN CREATE ROLE cacheaside LOGIN SUPERUSER PASSWORD 'cacheaside'; END IF; END \$\$;" >/dev/null
	runuser -u postgres -- createdb -O cacheaside cacheaside_test 2>/dev/null || true
	export CACHEASIDE_TEST_DATABASE_URL='postgres://cacheaside:cacheaside@127.0.0.1:5432/cacheaside_test?sslmode=disable'
fi
pg_ok || die "cannot connect to PostgreSQL at $CACHEASIDE_TEST_DATABASE_URL.
Install and start PostgreSQL 15+ (Debian/Ubuntu: sudo apt-get install postgresql && sudo pg_ctlcluster 15 main start),
then either allow the postgres user to connect over TCP to a database named test, or point
CACHEASIDE_TEST_DATABASE_URL at a database your user can create tables in."
echo "PostgreSQL is up"

modules=$(find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)

say "gofmt"
unformatted=$(gofmt -l . | grep -v '^\.git/' || true)
[ -z "$unformatted" ] || die "these files need gofmt -w: $unformatted"

for m in $modules; do
	say "go vet ($m)"
	(cd "$m" && go vet ./...)
done

for m in $modules; do
	say "go test -race ($m)"
	(cd "$m" && go test -race -count=1 -timeout 20m ./...)
done

say "all modules passed"
