package pin

import (
	"strings"
	"testing"
)

// FuzzScanBatch checks that ScanBatch never panics on any text and that its
// result keeps its promises: pins deduplicated and known, every replayed
// statement on the allow-list, the same answer twice.
//
//	go test -run '^$' -fuzz '^FuzzScanBatch$' -fuzztime 2m ./pkg/pin/
func FuzzScanBatch(f *testing.F) {
	for _, s := range []string{
		"SELECT 1", "SET NOCOUNT ON", "SET ANSI_NULLS, QUOTED_IDENTIFIER ON",
		"UPDATE t SET a = 1", "/* /* */ */ USE x", "SELECT 'it''s'", "[a]]b]",
		"EXEC('EXEC(''SET ROWCOUNT 1'')')", "EXEC sp_executesql N'SELECT 1'",
		"DECLARE c CURSOR FOR SELECT 1", "CREATE TABLE #t (a int)", "SET LOCK_TIMEOUT -1",
	} {
		f.Add(s)
	}
	known := map[Reason]bool{}
	for _, r := range Reasons {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, sql string) {
		b := ScanBatch(sql)
		seen := map[Reason]bool{}
		for _, r := range b.Pins {
			if seen[r] || !known[r] {
				t.Fatalf("ScanBatch(%q): pin %q repeated or unknown in %v", sql, r, b.Pins)
			}
			seen[r] = true
		}
		for _, s := range b.Replay {
			if !ReplayAllowed(s) {
				t.Fatalf("ScanBatch(%q): replays %q, which is not on the allow-list", sql, s)
			}
		}
		b2 := ScanBatch(sql)
		if strings.Join(b2.Replay, "\n") != strings.Join(b.Replay, "\n") || len(b2.Pins) != len(b.Pins) {
			t.Fatalf("ScanBatch(%q) is not deterministic", sql)
		}
		_ = ScanDynamic(sql)
		_ = ScanRPC(sql, uint16(len(sql)))
	})
}

// TestScanBatchLongInputs runs shapes that would be quadratic (or worse) in
// a naive lexer over several MiB. The design is linear; the test's guard is
// go test's own timeout, not a wall-clock bound.
func TestScanBatchLongInputs(t *testing.T) {
	const n = 1 << 20
	inputs := map[string]string{
		"open parens":       strings.Repeat("(", n),
		"nested comments":   strings.Repeat("/*", n/2),
		"quotes":            strings.Repeat("''", n/2) + "'",
		"brackets":          "[" + strings.Repeat("]]", n/2),
		"sets":              strings.Repeat("SET NOCOUNT ON ", n/16),
		"set lists":         "SET " + strings.Repeat("ANSI_NULLS, ", n/12) + "ON",
		"dynamic concat":    "EXEC(" + strings.Repeat("'x'+", n/4) + "'y')",
		"nested dynamic":    strings.Repeat("EXEC('", n/8),
		"dots":              "EXEC a" + strings.Repeat(".", n),
		"words":             strings.Repeat("select ", n/7),
		"many temp":         strings.Repeat("#t ", n/3),
		"create proc names": "CREATE PROC " + strings.Repeat("a.", n/2),
	}
	for name, sql := range inputs {
		b := ScanBatch(sql)
		if len(b.Pins) > len(Reasons) {
			t.Errorf("%s: %d pins", name, len(b.Pins))
		}
	}
	if got := ScanBatch(inputs["quotes"]).Pins; len(got) != 1 || got[0] != Unknown {
		t.Errorf("an unterminated string of 1 MiB pins %v, want [unparsed]", got)
	}
	if got := ScanBatch(inputs["sets"]); len(got.Pins) != 0 || len(got.Replay) != n/16 {
		t.Errorf("repeated SET NOCOUNT ON: pins %v, replay %d", got.Pins, len(got.Replay))
	}
}

func BenchmarkScanBatch(b *testing.B) {
	sql := "SET NOCOUNT ON; SELECT TOP(10) [o].[Id], [o].[Name] FROM [Orders] AS [o] WHERE [o].[Name] = N'x' -- c\n/* d */ AND o.Id > @p0"
	b.SetBytes(int64(len(sql)))
	for b.Loop() {
		ScanBatch(sql)
	}
}
