package route

import (
	"strings"

	"github.com/tdsgate/tdsgate/pkg/config"
)

// matcher is one compiled matcher: empty matches anything; otherwise a
// case-insensitive comparison, where '*' matches any run of characters.
type matcher struct {
	pat  string // lower-cased
	glob bool
	set  bool
}

func newMatcher(p string) matcher {
	if p == "" {
		return matcher{}
	}
	return matcher{pat: strings.ToLower(p), glob: strings.Contains(p, "*"), set: true}
}

func (m matcher) match(s string) bool {
	if !m.set {
		return true
	}
	if !m.glob {
		return strings.EqualFold(m.pat, s)
	}
	return Glob(m.pat, strings.ToLower(s))
}

// serverMatcher matches a normalized server name (config.SplitServerName):
// the host always, the instance only if the pattern names one.
type serverMatcher struct {
	host, inst matcher
	set        bool
}

func newServerMatcher(p string) serverMatcher {
	if p == "" {
		return serverMatcher{}
	}
	host, inst := config.SplitServerName(p)
	sm := serverMatcher{host: newMatcher(host), set: true}
	if !sm.host.set {
		sm.host = matcher{set: true} // matches only an empty host
	}
	if strings.Contains(p, `\`) {
		sm.inst = newMatcher(inst)
		if !sm.inst.set {
			sm.inst = matcher{set: true} // "host\" matches only no instance
		}
	}
	return sm
}

func (m serverMatcher) match(host, inst string) bool {
	return m.host.match(host) && m.inst.match(inst)
}

// Glob reports whether s matches pattern, where '*' matches any run of
// bytes (including none) and every other byte matches itself. It is
// case-sensitive: Route lower-cases both sides first. It runs in
// O(len(pattern)·len(s)) at worst, without recursion.
func Glob(pattern, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := 0, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			c := pattern[px]
			if c == '*' {
				// Try matching the empty run first; remember where to
				// resume to let this star eat one more byte.
				nextPx, nextSx = px, sx+1
				px++
				continue
			}
			if sx < len(s) && s[sx] == c {
				px++
				sx++
				continue
			}
		}
		if nextSx > 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}
