// Command vulncheck fails when a module of this repository requires a
// module version that has a published security advisory with a fixed
// release. scripts/vulncheck.sh runs it; docs/testing.md says why.
//
// It reads the requirements of each module's go.mod (go mod edit -json),
// leaves out the repository's own modules (each is checked through its own
// go.mod), and asks govulncheck in query mode (-mode query -format json)
// for the advisories of every module version required and of the standard
// library of the Go toolchain running it. An advisory applies to a version
// when one of its ranges holds it; the fixed version is the end of that
// range. It prints one line per advisory that applies and exits 1 if any
// non-standard-library one has a fixed release. Standard-library advisories
// are warnings: the go line of a go.mod is a minimum, and the toolchain of
// whoever builds decides which standard library is compiled in, so the
// warning names the Go release that fixes them.
//
// Usage:
//
//	go run ./scripts/vulncheck -govulncheck PATH -db URL MODULE_DIR...
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

func main() {
	govulncheck := flag.String("govulncheck", "govulncheck", "the govulncheck binary")
	db := flag.String("db", "https://vuln.go.dev", "the vulnerability database govulncheck reads (-db)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: vulncheck [-govulncheck PATH] [-db URL] MODULE_DIR...")
		os.Exit(2)
	}
	failed, err := run(os.Stdout, *govulncheck, *db, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// A module is one go.mod of the repository: its path, its directory and the
// module versions it requires.
type module struct {
	path, dir string
	requires  []version
}

// A version is one module version: a module path and its semantic version
// ("v1.2.3"); the standard library is the path "stdlib".
type version struct {
	path, version string
}

func (v version) String() string { return v.path + "@" + v.version }

// A finding is an advisory that applies to a required version.
type finding struct {
	module  string // the repository's module that requires it
	version version
	id      string
	summary string
	fixed   string // "" when no release fixes it
}

// run checks the modules in dirs, prints what it finds to w, and reports
// whether a non-standard-library advisory with a fixed release applies.
func run(w io.Writer, govulncheck, db string, dirs []string) (bool, error) {
	mods, err := readModules(dirs)
	if err != nil {
		return false, err
	}
	stdlib := version{"stdlib", stdlibVersion(runtime.Version())}
	var query []string
	seen := map[version]bool{}
	if stdlib.version != "" {
		query = append(query, stdlib.String())
		seen[stdlib] = true
	} else {
		fmt.Fprintf(w, "note  standard library of %s: not checked (not a Go release)\n", runtime.Version())
	}
	for _, m := range mods {
		for _, v := range m.requires {
			if !seen[v] {
				seen[v] = true
				query = append(query, v.String())
			}
		}
	}
	sort.Strings(query)
	args := append([]string{"-db", db, "-mode", "query", "-format", "json"}, query...)
	cmd := exec.Command(govulncheck, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return false, fmt.Errorf("%s -mode query: %w\n%s", govulncheck, err, stderr.Bytes())
	}
	entries, err := decodeEntries(bytes.NewReader(out))
	if err != nil {
		return false, err
	}

	var std []finding
	if stdlib.version != "" {
		std = match([]module{{path: runtime.Version(), requires: []version{stdlib}}}, entries)
	}
	return report(w, mods, match(mods, entries), std), nil
}

// readModules reads the module path and requirements of each directory's
// go.mod, leaving out requirements of the modules in dirs themselves.
func readModules(dirs []string) ([]module, error) {
	var mods []module
	own := map[string]bool{}
	for _, dir := range dirs {
		out, err := exec.Command("go", "mod", "edit", "-json", filepath.Join(dir, "go.mod")).Output()
		if err != nil {
			return nil, fmt.Errorf("go mod edit -json %s: %w", filepath.Join(dir, "go.mod"), err)
		}
		m, err := decodeGoMod(dir, out)
		if err != nil {
			return nil, err
		}
		own[m.path] = true
		mods = append(mods, m)
	}
	for i, m := range mods {
		var reqs []version
		for _, v := range m.requires {
			if !own[v.path] {
				reqs = append(reqs, v)
			}
		}
		mods[i].requires = reqs
	}
	return mods, nil
}

// decodeGoMod decodes the output of go mod edit -json. A requirement
// replaced by another module version is that version; one replaced by a
// directory is left out (its source is not a published version).
func decodeGoMod(dir string, data []byte) (module, error) {
	type modVersion struct{ Path, Version string }
	var gomod struct {
		Module  modVersion
		Require []modVersion
		Replace []struct{ Old, New modVersion }
	}
	if err := json.Unmarshal(data, &gomod); err != nil {
		return module{}, fmt.Errorf("%s/go.mod: %w", dir, err)
	}
	m := module{path: gomod.Module.Path, dir: dir}
	for _, r := range gomod.Require {
		v, keep := version{r.Path, r.Version}, true
		for _, rep := range gomod.Replace {
			if rep.Old.Path == r.Path && (rep.Old.Version == "" || rep.Old.Version == r.Version) {
				v, keep = version{rep.New.Path, rep.New.Version}, rep.New.Version != ""
			}
		}
		if keep {
			m.requires = append(m.requires, v)
		}
	}
	return m, nil
}

// report prints the findings, module by module, and the standard-library
// warning, and reports whether any non-standard-library finding has a
// fixed release.
func report(w io.Writer, mods []module, findings, std []finding) bool {
	failed := false
	for _, m := range mods {
		n := 0
		for _, f := range findings {
			if f.module != m.path {
				continue
			}
			n++
			if f.fixed == "" {
				fmt.Fprintf(w, "note  %s: requires %s: %s (%s) has no fixed release\n", m.dir, f.version, f.id, f.summary)
				continue
			}
			failed = true
			fmt.Fprintf(w, "FAIL  %s: requires %s: %s (%s) is fixed in %s: go get %s@%s\n", m.dir, f.version, f.id, f.summary, f.fixed, f.version.path, f.fixed)
		}
		if n == 0 {
			fmt.Fprintf(w, "ok    %s: %d module versions required, no advisory applies\n", m.dir, len(m.requires))
		}
	}
	if len(std) > 0 {
		latest := ""
		ids := make([]string, 0, len(std))
		for _, f := range std {
			ids = append(ids, f.id)
			if f.fixed != "" && (latest == "" || compareSemver(f.fixed, latest) > 0) {
				latest = f.fixed
			}
		}
		sort.Strings(ids)
		fixedBy := "no Go release fixes them yet"
		if latest != "" {
			fixedBy = "Go " + strings.TrimPrefix(latest, "v") + " fixes them: build with it or newer"
		}
		fmt.Fprintf(w, "warn  standard library of %s: %d advisories (%s); %s\n",
			runtime.Version(), len(std), strings.Join(ids, ", "), fixedBy)
	}
	return failed
}
