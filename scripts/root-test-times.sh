#!/usr/bin/env bash
# Remakes scripts/root-test-times.txt: the time each of the root package's
# tests took in one run of its race test binary, longest first.
# scripts/test.sh splits the root package's tests over its shards by these
# times; run this when tests are added or change length (a stale list only
# costs balance). It needs what scripts/test.sh needs (redis-server and
# PostgreSQL) and takes about 8 minutes: the tests run one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOWORK="$PWD/go.work"
dir=$(mktemp -d "${TMPDIR:-/tmp}/cacheaside-times.XXXXXX")
trap 'rm -rf "$dir"' EXIT
go test -race -c -o "$dir/root.test" .
if ! "$dir/root.test" -test.count=1 -test.timeout=20m -test.v >"$dir/run.log" 2>&1; then
	grep -E '^(--- FAIL|FAIL|panic)' "$dir/run.log" >&2 || tail -n 50 "$dir/run.log" >&2
	echo "ERROR: the root package's tests failed (log: $dir/run.log kept)" >&2
	trap - EXIT
	exit 1
fi
out=scripts/root-test-times.txt
{
	echo "# seconds test: one run of the root package's tests, made by scripts/root-test-times.sh"
	echo "# on $(date -u +%Y-%m-%d) at a load average of $(cut -d' ' -f1-3 /proc/loadavg); scripts/test.sh shards by it"
	sed -nE 's/^--- (PASS|FAIL|SKIP): ([^ ]+) \(([0-9.]+)s\)$/\3 \2/p' "$dir/run.log" | sort -k1,1nr -k2
} >"$out"
echo "wrote $out ($(grep -vc '^#' "$out") tests)"
