package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FieldError is one problem with the configuration. Path is the field's
// YAML path ("buckets[1].max_connections"), or "env NAME" for an
// environment variable.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Load reads the YAML file at path and returns the configuration: decoded
// with unknown keys rejected, defaults applied for every key the file
// leaves out, environment overrides applied, then validated. The error
// lists every problem found (errors.Join of *FieldError, or the YAML
// syntax error), each on its own line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := LoadBytes(data)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return c, nil
}

// LoadBytes is [Load] for a YAML document already in memory.
func LoadBytes(data []byte) (*Config, error) {
	c, err := decode(data)
	if err != nil {
		return nil, err
	}
	errs := c.applyEnv()
	c.applyDerived()
	errs = append(errs, c.validate()...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// decode parses data into a Config with defaults applied to the keys data
// leaves out.
func decode(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	ix := newYAMLIndex()
	if len(root.Content) > 0 {
		ix.walk(root.Content[0], "", false)
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err != io.EOF {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, err
		}
		errs := make([]error, 0, len(te.Errors))
		for _, msg := range te.Errors {
			errs = append(errs, ix.translate(msg))
		}
		return nil, errors.Join(errs...)
	}
	c.applyDefaults(ix.has)
	return c, nil
}

// yamlIndex maps a document's lines to the YAML paths on them, and records
// which paths the document sets, so that decoder errors can name paths and
// defaults can fill in only what is absent.
type yamlIndex struct {
	present map[string]bool
	byLine  map[int][]yamlEntry
}

type yamlEntry struct {
	path  string
	key   bool // the entry is a mapping key, not a value
	kind  yaml.Kind
	field string // last path segment, for keys
}

func newYAMLIndex() *yamlIndex {
	return &yamlIndex{present: map[string]bool{}, byLine: map[int][]yamlEntry{}}
}

func (ix *yamlIndex) has(path string) bool { return ix.present[path] }

// walk records n, found at path. presenceOnly (for merged and aliased
// nodes, whose lines are elsewhere) records presence but no lines.
func (ix *yamlIndex) walk(n *yaml.Node, path string, presenceOnly bool) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		ix.walk(n.Alias, path, true)
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
				ix.walkMerge(v, path)
				continue
			}
			child := k.Value
			if path != "" {
				child = path + "." + k.Value
			}
			ix.present[child] = true
			if !presenceOnly {
				ix.byLine[k.Line] = append(ix.byLine[k.Line], yamlEntry{path: child, key: true, field: k.Value})
				ix.byLine[v.Line] = append(ix.byLine[v.Line], yamlEntry{path: child, kind: v.Kind})
			}
			ix.walk(v, child, presenceOnly)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			child := fmt.Sprintf("%s[%d]", path, i)
			ix.present[child] = true
			if !presenceOnly {
				ix.byLine[item.Line] = append(ix.byLine[item.Line], yamlEntry{path: child, kind: item.Kind})
			}
			ix.walk(item, child, presenceOnly)
		}
	}
}

func (ix *yamlIndex) walkMerge(v *yaml.Node, path string) {
	if v.Kind == yaml.SequenceNode {
		for _, item := range v.Content {
			ix.walk(item, path, true)
		}
		return
	}
	ix.walk(v, path, true)
}

var (
	reUnknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type \S+$`)
	reCannot       = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
)

// translate turns one yaml.TypeError message into an error naming the
// YAML path, when the line identifies it.
func (ix *yamlIndex) translate(msg string) error {
	if m := reUnknownField.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		for _, e := range ix.byLine[line] {
			if e.key && e.field == m[2] {
				return &FieldError{Path: e.path, Msg: "unknown field (line " + m[1] + ")"}
			}
		}
		return &FieldError{Path: m[2], Msg: "unknown field (line " + m[1] + ")"}
	}
	if m := reCannot.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		want := friendlyType(m[4])
		got := m[2]
		if m[3] != "" {
			got = strconv.Quote(m[3])
		}
		kind := yaml.ScalarNode
		switch m[2] {
		case "!!map":
			kind = yaml.MappingNode
		case "!!seq":
			kind = yaml.SequenceNode
		}
		var match []yamlEntry
		for _, e := range ix.byLine[line] {
			if !e.key && e.kind == kind {
				match = append(match, e)
			}
		}
		text := fmt.Sprintf("want %s, got %s (line %d)", want, got, line)
		if len(match) == 1 {
			return &FieldError{Path: match[0].path, Msg: text}
		}
		return errors.New(text)
	}
	return errors.New(msg)
}

func friendlyType(goType string) string {
	switch {
	case goType == "time.Duration":
		return `a duration such as "30s" or "500ms"`
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case goType == "config.Encryption":
		return "an encryption mode (none, login, full or strict)"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "config."):
		return "a mapping"
	}
	return goType
}
