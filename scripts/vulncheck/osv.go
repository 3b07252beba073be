// OSV advisories as govulncheck prints them, and which of them apply to a
// module version.

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// An entry is the part of an OSV advisory this check reads.
type entry struct {
	ID        string `json:"id"`
	Summary   string `json:"summary"`
	Withdrawn string `json:"withdrawn"`
	Affected  []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Type   string `json:"type"`
			Events []struct {
				Introduced string `json:"introduced"`
				Fixed      string `json:"fixed"`
			} `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

// decodeEntries reads govulncheck's JSON stream and returns its OSV
// entries (the messages {"osv": ...}), leaving out withdrawn ones.
func decodeEntries(r io.Reader) ([]entry, error) {
	dec := json.NewDecoder(r)
	var entries []entry
	for {
		var msg struct {
			OSV *entry `json:"osv"`
		}
		err := dec.Decode(&msg)
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading govulncheck's output: %w", err)
		}
		if msg.OSV != nil && msg.OSV.Withdrawn == "" {
			entries = append(entries, *msg.OSV)
		}
	}
}

// match returns the advisories that apply to the modules' requirements.
func match(mods []module, entries []entry) []finding {
	var out []finding
	for _, m := range mods {
		for _, v := range m.requires {
			for _, e := range entries {
				if fixed, ok := affects(e, v); ok {
					out = append(out, finding{m.path, v, e.ID, e.Summary, fixed})
				}
			}
		}
	}
	return out
}

// affects reports whether e applies to v and, if so, the version that
// fixes it ("v1.2.3"; "" when none does). A SEMVER range's events, in
// order, open (introduced) and close (fixed) the intervals it covers.
func affects(e entry, v version) (fixed string, ok bool) {
	for _, a := range e.Affected {
		if a.Package.Name != v.path {
			continue
		}
		for _, r := range a.Ranges {
			if r.Type != "SEMVER" {
				continue
			}
			in := false
			for _, ev := range r.Events {
				switch {
				case ev.Introduced != "":
					in = ev.Introduced == "0" || compareSemver(v.version, ev.Introduced) >= 0
				case ev.Fixed != "" && in:
					if compareSemver(v.version, ev.Fixed) < 0 {
						return "v" + ev.Fixed, true
					}
					in = false
				}
			}
			if in {
				return "", true
			}
		}
	}
	return "", false
}
