#!/usr/bin/env bash
# Prints the directory of every module of the repository, one a line,
# relative to the repository root ("." for the root module): the modules
# go.work lists. scripts/test.sh and scripts/vulncheck.sh both take their
# list from here.
set -euo pipefail
cd "$(dirname "$0")/.."
GOWORK="$PWD/go.work" go work edit -json | sed -n 's/.*"DiskPath": "\(.*\)".*/\1/p' | sed 's#^\./##; s#^$#.#'
