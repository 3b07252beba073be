// Semantic versions: their order, and the version of the standard library
// of a Go release.

package main

import (
	"fmt"
	"regexp"
	"strings"
)

// goRelease matches a Go release's version ("go1.26.8", "go1.27rc1").
var goRelease = regexp.MustCompile(`^go(\d+\.\d+)(\.\d+)?(?:(rc|beta)(\d+))?$`)

// stdlibVersion returns the semantic version the vulnerability database
// gives the standard library of Go version goVersion ("go1.26.8" is
// "v1.26.8", "go1.27rc1" is "v1.27.0-rc.1"), or "" for a development
// build. A GOEXPERIMENT suffix (" X:...") is ignored.
func stdlibVersion(goVersion string) string {
	f := strings.Fields(goVersion)
	if len(f) == 0 {
		return ""
	}
	m := goRelease.FindStringSubmatch(f[0])
	if m == nil {
		return ""
	}
	v := "v" + m[1]
	if m[2] != "" {
		v += m[2]
	} else {
		v += ".0"
	}
	if m[3] != "" {
		v += "-" + m[3] + "." + m[4]
	}
	return v
}

// compareSemver compares two semantic versions, with or without a leading
// "v", by the rules of semver.org (a build suffix such as +incompatible is
// ignored; a prerelease, which includes a Go pseudo-version, sorts before
// its release). It returns -1, 0 or +1.
func compareSemver(a, b string) int {
	ca, pa := splitSemver(a)
	cb, pb := splitSemver(b)
	for i := range 3 {
		if c := compareNumeric(ca[i], cb[i]); c != 0 {
			return c
		}
	}
	switch {
	case pa == pb:
		return 0
	case pa == "":
		return 1
	case pb == "":
		return -1
	}
	ia, ib := strings.Split(pa, "."), strings.Split(pb, ".")
	for i := 0; i < len(ia) && i < len(ib); i++ {
		na, nb := isNumeric(ia[i]), isNumeric(ib[i])
		var c int
		switch {
		case na && nb:
			c = compareNumeric(ia[i], ib[i])
		case na:
			c = -1
		case nb:
			c = 1
		default:
			c = strings.Compare(ia[i], ib[i])
		}
		if c != 0 {
			return c
		}
	}
	return compareNumeric(fmt.Sprint(len(ia)), fmt.Sprint(len(ib)))
}

// splitSemver splits "v1.2.3-pre+build" into ["1" "2" "3"] and "pre";
// missing parts are "0".
func splitSemver(s string) ([3]string, string) {
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	var pre string
	if i := strings.IndexByte(s, '-'); i >= 0 {
		s, pre = s[:i], s[i+1:]
	}
	core := [3]string{"0", "0", "0"}
	for i, p := range strings.SplitN(s, ".", 3) {
		core[i] = p
	}
	return core, pre
}

func isNumeric(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// compareNumeric compares two decimal numbers of any length.
func compareNumeric(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}
