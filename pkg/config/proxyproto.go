package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ProxyProtocol is the PROXY protocol v2 setting of the client listener:
//
//	proxy_protocol: {enabled: true, trusted: ["10.0.0.5/32"]}
//
// The old boolean form (proxy_protocol: true | false) still loads, as
// {enabled: <bool>} with no trusted peers. Read at start (a reload keeps
// what the listeners started with).
type ProxyProtocol struct {
	// Enabled makes every client connection start with a PROXY protocol
	// v2 header (HAProxy's send-proxy-v2), whose source address is then
	// the client's address in logs and in the per-source limit. A
	// connection is refused (closed and logged) when its peer is not in
	// Trusted, or when it sends no valid header. Default false.
	// Env: PROXY_PROTOCOL (true/false).
	Enabled bool `yaml:"enabled"`

	// Trusted lists the peers (load balancers) allowed to send the
	// header, as CIDRs ("10.0.0.0/24") or single addresses ("10.0.0.5").
	// A connection from any other peer is closed before anything is read
	// from it. Enabled with an empty list trusts nobody: the proxy
	// starts, warns, and refuses every connection. Default: empty.
	Trusted []string `yaml:"trusted"`
}

// UnmarshalYAML accepts the mapping form and the old boolean form.
func (p *ProxyProtocol) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var b bool
		if err := n.Decode(&b); err != nil {
			return err
		}
		*p = ProxyProtocol{Enabled: b}
		return nil
	}
	if n.Kind == yaml.MappingNode {
		// Node.Decode does not reject unknown keys: check them here.
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch k := n.Content[i]; k.Value {
			case "enabled", "trusted":
			default:
				return &FieldError{Path: "proxy_protocol." + k.Value, Msg: fmt.Sprintf("unknown field (line %d)", k.Line)}
			}
		}
	}
	type plain ProxyProtocol
	var v plain
	if err := n.Decode(&v); err != nil {
		return err
	}
	*p = ProxyProtocol(v)
	return nil
}

// TrustedPrefixes parses Trusted. A single address is a prefix of its
// full length.
func (p *ProxyProtocol) TrustedPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(p.Trusted))
	var errs []error
	for i, s := range p.Trusted {
		pre, err := parsePrefix(s)
		if err != nil {
			errs = append(errs, &FieldError{Path: fmt.Sprintf("proxy_protocol.trusted[%d]", i), Msg: err.Error()})
			continue
		}
		out = append(out, pre)
	}
	return out, errors.Join(errs...)
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		pre, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (want e.g. 10.0.0.0/24 or fd00::/64)", s)
		}
		return pre.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or a CIDR (want e.g. 10.0.0.5 or 10.0.0.0/24)", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
