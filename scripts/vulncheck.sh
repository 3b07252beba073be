#!/usr/bin/env bash
# Fails when a module of this repository (every module scripts/modules.sh
# lists) requires a module version that has a published security advisory
# with a fixed release, and names the module, the advisory and the version
# that fixes it. Advisories against the standard library of the Go running
# it are printed as a warning naming the Go release that fixes them.
# scripts/test.sh runs it as one step; docs/testing.md says more.
#
# It uses govulncheck (installed with `go install` at the version pinned
# below if it is missing) against https://vuln.go.dev when that answers,
# and otherwise against a database built from the golang.org/x/vulndb
# module, which the Go module proxy serves, with that module's
# cmd/indexdb; the built database is kept in the user cache directory,
# one per vulndb version, so only the first run builds it.
#
# Environment:
#   CACHEASIDE_VULNDB   the database to use (a URL, e.g. file:///path), in
#                       place of the choice above
set -euo pipefail
cd "$(dirname "$0")/.."

govulncheck_version=v1.9.0
vulndb_version=v0.0.0-20261105234957-e22db6528018

export GOWORK="$PWD/go.work"
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
govulncheck="$gobin/govulncheck"
if ! "$govulncheck" -version 2>/dev/null | grep -q "govulncheck@$govulncheck_version"; then
	echo "installing govulncheck@$govulncheck_version"
	GOWORK=off go install "golang.org/x/vuln/cmd/govulncheck@$govulncheck_version"
fi

db=${CACHEASIDE_VULNDB:-}
if [ -z "$db" ] && command -v curl >/dev/null && curl -sfm 10 -o /dev/null https://vuln.go.dev/index/db.json; then
	db=https://vuln.go.dev
fi
if [ -z "$db" ]; then
	case "$(uname -s)" in
	Darwin) cache="$HOME/Library/Caches" ;;
	*) cache="${XDG_CACHE_HOME:-$HOME/.cache}" ;;
	esac
	dir="$cache/cacheaside/vulndb-$vulndb_version"
	if [ ! -f "$dir/index/db.json" ]; then
		echo "vuln.go.dev does not answer: building the database from golang.org/x/vulndb@$vulndb_version into $dir"
		src=$(GOWORK=off go mod download -json "golang.org/x/vulndb@$vulndb_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -d "$src/data/osv" ] || { echo "golang.org/x/vulndb@$vulndb_version has no data/osv" >&2; exit 2; }
		mkdir -p "$cache/cacheaside"
		tmp=$(mktemp -d "$cache/cacheaside/vulndb.XXXXXX")
		(cd "$src" && GOWORK=off go run ./cmd/indexdb -vulns data/osv -out "$tmp/db") || { rm -rf "$tmp"; exit 2; }
		# Another run may have built it meanwhile: keep the first.
		[ -f "$dir/index/db.json" ] || { rm -rf "$dir"; mv "$tmp/db" "$dir"; }
		rm -rf "$tmp"
	fi
	db="file://$dir"
fi

echo "govulncheck@$govulncheck_version, database $db"
bin=$(mktemp "${TMPDIR:-/tmp}/vulncheck.XXXXXX")
trap 'rm -f "$bin"' EXIT
go build -o "$bin" ./scripts/vulncheck
# shellcheck disable=SC2046 # one module directory a word
"$bin" -govulncheck "$govulncheck" -db "$db" $(scripts/modules.sh)
