package config

import "strings"

// SplitServerName normalizes a server name as a client sends it in LOGIN7
// (or as a route's server pattern spells it) and splits it into host and
// instance, both lower-cased: surrounding space, a protocol prefix (tcp:,
// np:, lpc:, admin:) and a trailing ",port" are dropped, then the name
// splits at the first '\'; brackets around an IPv6 host and a trailing '.'
// of a DNS name are removed.
//
//	"TCP:DB.Example.com.,1433"   → "db.example.com", ""
//	"db.example.com\Sales,14330" → "db.example.com", "sales"
//	"[::1],1433"                 → "::1", ""
func SplitServerName(s string) (host, instance string) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, ':'); i > 0 {
		switch strings.ToLower(s[:i]) {
		case "tcp", "np", "lpc", "admin":
			s = s[i+1:]
		}
	}
	if i := strings.LastIndexByte(s, ','); i >= 0 {
		s = s[:i]
	}
	host, instance, _ = strings.Cut(s, `\`)
	host = strings.TrimSpace(host)
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(host, ".")
	return strings.ToLower(host), strings.ToLower(strings.TrimSpace(instance))
}
