// Package pin: stand-in for the lexer of branch i14lex until it is merged.
// Delete this file at the merge.
package pin

import "strings"

// Reason is why a session pins.
type Reason string

// Batch is what a SQL batch does to its session.
type Batch struct {
	Pins                 []Reason
	Replay               []string
	BeginsTran, EndsTran bool
}

// ScanBatch is a crude stand-in.
func ScanBatch(sql string) Batch {
	var b Batch
	u := strings.ToUpper(sql)
	switch {
	case strings.Contains(u, "SET LANGUAGE"), strings.Contains(u, "SET NOCOUNT"):
		b.Replay = append(b.Replay, sql)
	case strings.Contains(u, "SET "):
		b.Pins = append(b.Pins, "set_option")
	}
	if strings.Contains(u, "#") {
		b.Pins = append(b.Pins, "temp_table")
	}
	if strings.Contains(u, "EXECUTE AS") {
		b.Pins = append(b.Pins, "execute_as")
	}
	return b
}

// ScanRPC is a crude stand-in.
func ScanRPC(name string, procID uint16) []Reason {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, "sp_prep") || strings.HasPrefix(n, "sp_cursor") || procID == 11 || procID == 13 || (procID >= 1 && procID <= 9) {
		return []Reason{"prepared"}
	}
	return nil
}
