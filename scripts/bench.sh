#!/usr/bin/env bash
# Runs the hit-path, hot-key and stampede benchmarks in interleaved rounds
# (one `go test -bench` per round, every benchmark in each round) so that
# the noise of a shared machine spreads evenly, then compares them with
# benchstat. Usage: scripts/bench.sh [rounds] [benchtime]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
benchtime=${2:-1s}
out=bench/results
mkdir -p "$out"
command -v benchstat >/dev/null || go install golang.org/x/perf/cmd/benchstat@latest
PATH="$PATH:$(go env GOPATH)/bin"
go test -c -o "$out/cacheaside.test" .
: >"$out/raw.txt"
for i in $(seq 1 "$rounds"); do
	echo "round $i/$rounds" >&2
	"$out/cacheaside.test" -test.run '^$' -test.bench "${BENCH:-GetHit|RawRedisGet|GetHotKey|Stampede}" \
		-test.benchtime "$benchtime" >>"$out/raw.txt"
done
# compare NAME [benchstat flags]: benchstat of $out/NAME.txt, if that run
# had any of those benchmarks.
compare() {
	local name=$1
	shift
	[ -s "$out/$name.txt" ] || return 0
	benchstat "$@" "$out/$name.txt" | tee "$out/$name-benchstat.txt"
}
# Hit path: cacheaside against the raw GET, per client setup.
sed -n 's#^BenchmarkGetHit/impl=\([a-z-]*\)/#BenchmarkHit/impl=\1/#p; s#^BenchmarkRawRedisGet/impl=\([a-z-]*\)/#BenchmarkHit/impl=\1/#p' "$out/raw.txt" >"$out/hit.txt"
compare hit -col /impl
grep -E '^BenchmarkGetHotKey' "$out/raw.txt" >"$out/hotkey.txt" || true
compare hotkey -col /impl
grep -E '^BenchmarkStampede' "$out/raw.txt" >"$out/stampede.txt" || true
compare stampede
# Hit path per topology (BENCH=TopologyHit): cacheaside against the raw GET.
grep -E '^BenchmarkTopologyHit' "$out/raw.txt" >"$out/topology.txt" || true
compare topology -col /impl
