#!/usr/bin/env bash
# Runs N copies (default 2) of the root package's tests at once, under
# -race, as a busy CI machine or laptop would: a test that passes alone but
# fails here is timing-sensitive, which is a defect of the code or of the
# test. Extra arguments go to go test (for example -run 'Stampede').
#
#	scripts/stress.sh [N] [go test flags...]
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-2}
shift || true
dir=$(mktemp -d)
go test -race -c -o "$dir/root.test" . || exit 1
pids=()
for i in $(seq 1 "$n"); do
	"$dir/root.test" -test.count=1 -test.timeout=20m "$@" >"$dir/$i.log" 2>&1 &
	pids+=($!)
done
failed=0
for i in $(seq 1 "$n"); do
	if wait "${pids[$((i - 1))]}"; then
		echo "copy $i: ok ($(tail -1 "$dir/$i.log"))"
	else
		failed=$((failed + 1))
		echo "copy $i: FAILED; its failures:"
		grep -E -- '^(--- FAIL|FAIL|panic:)|_test\.go:[0-9]+:' "$dir/$i.log" | head -40
	fi
done
echo "$((n - failed)) passed, $failed failed (logs in $dir)"
[ "$failed" = 0 ]
