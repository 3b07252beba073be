#!/usr/bin/env bash
# Runs the whole test suite: gofmt, go vet (and staticcheck if it is
# installed), the advisory check of scripts/vulncheck.sh, and
# `go test -race` for every module in the repository, against
# real redis-server processes (the tests start their own) and a real
# PostgreSQL. Every module runs even when another failed; a line is printed
# as each starts and ends, and a summary table at the end. It exits non-zero
# if anything failed. Passing tests print nothing (go-redis's log lines go to
# the running test's log, see internal/testlog); a failing module's output
# is printed when it ends, and every module's full output is kept in a
# temporary directory named in the summary. docs/testing.md says more.
#
# Environment:
#   CACHEASIDE_TEST_JOBS   steps run at once (default 10; the tests mostly
#                          wait on timers and Redis, not on the CPU)
#   CACHEASIDE_TEST_SHARDS processes the root package's tests are split
#                          over (default 6): it is the longest step, about
#                          8 minutes of tests that wait on timers
#   VALKEY_SERVER          a valkey-server binary: the root package's tests
#                          run once more against it (rows "valkey (root,
#                          shard i/n)", the same test binary)
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

# The modules require each other at the release they go with; go.work
# (at the repository root) resolves those to this working tree. Without it
# (GOWORK=off) nothing builds until that release is tagged.
export GOWORK="$PWD/go.work"
# -trimpath keeps the checkout's directory out of the build cache's keys:
# a fresh clone (CI's) then reuses what an earlier run in another
# directory compiled, instead of spending minutes on the -race builds.
export GOFLAGS="-trimpath${GOFLAGS:+ $GOFLAGS}"
modules=$(scripts/modules.sh)
[ -n "$modules" ] || die "go.work lists no modules"
jobs=${CACHEASIDE_TEST_JOBS:-10}
shards=${CACHEASIDE_TEST_SHARDS:-6}
logs=$(mktemp -d "${TMPDIR:-/tmp}/cacheaside-test.XXXXXX")
started=$SECONDS

# Rows of the summary, in the order steps were started.
rows=()
now() { date -u +%H:%M:%S; }
elapsed() { local s=$1; printf '%dm%02ds' $((s / 60)) $((s % 60)); }
name_of() { printf '%s' "$1" | sed 's/^\./root/' | tr '/ ()' '____'; }

# step NAME CMD...: runs CMD in the background with its output in a file of
# its own, after waiting for a free job slot, and records its result.
pids=()
step() {
	local name=$1
	shift
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
	local f
	f="$logs/$(name_of "$name")"
	printf '[%s] start %s\n' "$(now)" "$name"
	rows+=("$name")
	(
		t0=$SECONDS
		if "$@" >"$f.log" 2>&1; then r=ok; else r=FAIL; fi
		t=$((SECONDS - t0))
		printf '%s %s\n' "$r" "$t" >"$f.result"
		printf '[%s] end   %s: %s in %s\n' "$(now)" "$name" "$r" "$(elapsed "$t")"
		if [ "$r" = FAIL ]; then
			# go test prints only failing tests' output (and the package
			# lines); keep the end of it, where the failure is.
			printf -- '----- %s output (last 150 lines of %s) -----\n' "$name" "$f.log"
			tail -n 150 "$f.log"
			printf -- '----- end of %s output -----\n' "$name"
		fi
	) &
	pids+=($!)
}

lint() {
	local bad
	bad=$(gofmt -l . | grep -v '^\.git/' || true)
	if [ -n "$bad" ]; then
		echo "these files need gofmt -w:"
		echo "$bad"
		return 1
	fi
	# One go vet and one staticcheck over every module's packages (the
	# workspace, go.work, lets one process load them all): the modules
	# share most of their dependencies, which one run analyses once
	# (module by module took 5 minutes on a busy machine, this about 1).
	local m ok=0 patterns=()
	for m in $modules; do
		if [ "$m" = . ]; then patterns+=(./...); else patterns+=("./$m/..."); fi
	done
	echo "go vet ${patterns[*]}"
	go vet "${patterns[@]}" || ok=1
	local sc
	sc=$(staticcheck_bin) || return 1
	echo "staticcheck ${patterns[*]}"
	"$sc" "${patterns[@]}" || ok=1
	return $ok
}

# staticcheck_bin prints the path of staticcheck $staticcheck_version,
# installed with `go install` into GOBIN if it is not there yet (about
# 30 s, once). Without it the lint step fails: it is part of the suite.
staticcheck_version=v0.8.2
staticcheck_bin() {
	local gobin
	gobin=$(go env GOBIN)
	[ -n "$gobin" ] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
	if ! "$gobin/staticcheck" -version 2>/dev/null | grep -qF "(${staticcheck_version#v})"; then
		echo "installing staticcheck@$staticcheck_version into $gobin" >&2
		GOWORK=off go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version" >&2 ||
			{ echo "ERROR: cannot install honnef.co/go/tools/cmd/staticcheck@$staticcheck_version" >&2; return 1; }
	fi
	echo "$gobin/staticcheck"
}

gotest() { (cd "$1" && go test -race -count=1 -timeout 15m ./...); }

# The root module: its packages other than the root package in one step,
# and the root package's tests and examples split over $shards processes of
# one test binary. The split balances the tests' times as last measured
# (scripts/root-test-times.txt, `scripts/root-test-times.sh` remakes it; a
# test it does not list counts as one second): longest first, each to the
# shard with the least time so far. A stale list costs balance, never a
# test: every name `-test.list` prints lands in exactly one shard.
root_rest() { go test -race -count=1 -timeout 15m $(go list ./... | grep -vx github.com/cacheaside/cacheaside); }
build_failed() { cat "$logs/root-build.log"; return 1; }
shard_names() {
	local i=$1
	"$logs/root.test" -test.list '.*' | grep -E '^(Test|Example|Fuzz)' |
		awk 'NR == FNR { t[$2] = $1; next } { print (($1 in t) ? t[$1] : 1), FNR, $1 }' scripts/root-test-times.txt - |
		sort -k1,1nr -k2,2n |
		awk -v n="$shards" -v i="$i" '{
			b = 0
			for (s = 1; s < n; s++) if (load[s] < load[b]) b = s
			load[b] += $1
			if (b == i - 1) print $3
		}' | paste -sd '|'
}
root_shard() {
	local i=$1 names
	names=$(shard_names "$i")
	[ -n "$names" ] || { echo "no tests in shard $i"; return 0; }
	echo "shard $i/$shards: $names" | tr '|' ' '
	"$logs/root.test" -test.count=1 -test.timeout=15m -test.run "^($names)\$"
}

# The Valkey pass runs the same test binary, sharded the same way, with the
# tests' servers started from $VALKEY_SERVER (no second build; unsharded it
# ran past a 10-minute timeout at a load average of 20).
valkey_shard() { CACHEASIDE_TEST_SERVER="$VALKEY_SERVER" root_shard "$1"; }

say "testing ${modules//$'\n'/, } ($jobs at a time; logs in $logs)"
lint_name="gofmt, vet, staticcheck"
# Longest steps first, so that the short ones fill in at the end: the
# root package's shards, integration, bench and examples/outage (each
# over 1.5 minutes on a loaded machine), then the rest. The root
# package's test binary builds while the first other steps start.
printf '[%s] building the root package'"'"'s test binary\n' "$(now)"
(go test -race -c -o "$logs/root.test" . >"$logs/root-build.log" 2>&1; echo $? >"$logs/root-build.rc") &
build=$!
long=(integration bench examples/outage)
others=()
for m in "${long[@]}"; do grep -qx "$m" <<<"$modules" && others+=("$m"); done
for m in $modules; do
	[ "$m" = . ] || printf '%s\n' "${long[@]}" | grep -qx "$m" || others+=("$m")
done
step "${others[0]}" gotest "${others[0]}"
step ". (internal/...)" root_rest
wait "$build" || true
if [ "$(cat "$logs/root-build.rc" 2>/dev/null)" = 0 ]; then
	for i in $(seq 1 "$shards"); do step ". (package cacheaside, shard $i/$shards)" root_shard "$i"; done
else
	step ". (package cacheaside: build)" build_failed
fi
for m in "${others[@]:1:2}"; do step "$m" gotest "$m"; done
# The lint step is slow (staticcheck over every module).
step "$lint_name" lint
for m in "${others[@]:3}"; do step "$m" gotest "$m"; done
# Advisories against the modules' requirements (scripts/vulncheck.sh): a
# few seconds once its database is cached.
step "vulncheck (advisories)" scripts/vulncheck.sh
if [ -n "${VALKEY_SERVER:-}" ] && [ "$(cat "$logs/root-build.rc" 2>/dev/null)" = 0 ]; then
	for i in $(seq 1 "$shards"); do step "valkey (root, shard $i/$shards)" valkey_shard "$i"; done
fi
for p in "${pids[@]}"; do wait "$p" || true; done

say "summary ($(elapsed $((SECONDS - started))) in all; logs in $logs)"
failed=0
printf '%-40s %-6s %s\n' step result time
for name in "${rows[@]}"; do
	f="$logs/$(name_of "$name").result"
	if [ -f "$f" ]; then read -r r t <"$f"; else r=LOST t=0; fi
	[ "$r" = ok ] || failed=$((failed + 1))
	printf '%-40s %-6s %s\n' "$name" "$r" "$(elapsed "$t")"
done
# The advisory check's warnings (the standard library of the Go running
# it) show even when it passes.
grep -h '^warn' "$logs/$(name_of "vulncheck (advisories)").log" 2>/dev/null || true
if [ -z "${VALKEY_SERVER:-}" ]; then
	printf '%s\n' 'valkey: not run (set VALKEY_SERVER=$(../shared/valkey/build.sh) to run it)'
fi
if [ "$failed" -gt 0 ]; then
	say "$failed of ${#rows[@]} steps FAILED (their output is above, and in $logs)"
	exit 1
fi
say "all ${#rows[@]} steps passed"
