package pin

import "strings"

// optKind says how a SET option's value is written.
type optKind uint8

const (
	optBool  optKind = iota + 1 // SET opt[, opt...] ON|OFF
	optValue                    // SET opt <literal> | @var
	optTran                     // SET TRANSACTION ISOLATION LEVEL <level>
	optCtx                      // SET CONTEXT_INFO ...
	optOther                    // known, never replayed: pins set_option
)

// setOptions are the session SET options T-SQL knows. An option not listed
// here pins with reason Unknown, so a new option is never replayed blindly.
var setOptions = map[string]optKind{
	"ANSI_DEFAULTS": optBool, "ANSI_NULL_DFLT_OFF": optBool, "ANSI_NULL_DFLT_ON": optBool,
	"ANSI_NULLS": optBool, "ANSI_PADDING": optBool, "ANSI_WARNINGS": optBool,
	"ARITHABORT": optBool, "ARITHIGNORE": optBool, "CONCAT_NULL_YIELDS_NULL": optBool,
	"CURSOR_CLOSE_ON_COMMIT": optBool, "FMTONLY": optBool, "FORCEPLAN": optBool,
	"IMPLICIT_TRANSACTIONS": optBool, "NOCOUNT": optBool, "NOEXEC": optBool,
	"NUMERIC_ROUNDABORT": optBool, "PARSEONLY": optBool, "QUOTED_IDENTIFIER": optBool,
	"REMOTE_PROC_TRANSACTIONS": optBool, "SHOWPLAN_ALL": optBool, "SHOWPLAN_TEXT": optBool,
	"SHOWPLAN_XML": optBool, "XACT_ABORT": optBool, "NO_BROWSETABLE": optBool,

	"DATEFIRST": optValue, "DATEFORMAT": optValue, "LANGUAGE": optValue,
	"LOCK_TIMEOUT": optValue, "TEXTSIZE": optValue,

	"TRANSACTION":  optTran,
	"CONTEXT_INFO": optCtx,

	"DEADLOCK_PRIORITY": optOther, "QUERY_GOVERNOR_COST_LIMIT": optOther,
	"ROWCOUNT": optOther, "STATISTICS": optOther, "OFFSETS": optOther,
	"IDENTITY_INSERT": optOther, "RESULT_SET_CACHING": optOther,
}

// replayBool is the replay allow-list for ON/OFF options: for each option,
// which values are safe to replay after RESETCONNECTION. The decision,
// option by option:
//
//   - ANSI_NULLS, ANSI_NULL_DFLT_ON, ANSI_NULL_DFLT_OFF, ANSI_PADDING,
//     ANSI_WARNINGS, ARITHABORT, CONCAT_NULL_YIELDS_NULL, QUOTED_IDENTIFIER,
//     NOCOUNT, XACT_ABORT: both values. They change how this session's
//     statements behave and nothing else; RESETCONNECTION restores the login
//     defaults, so replaying the session's own SET gives it exactly its state
//     back and no other session sees it.
//   - ANSI_DEFAULTS: OFF only. ON also turns IMPLICIT_TRANSACTIONS and
//     CURSOR_CLOSE_ON_COMMIT on (see below).
//   - IMPLICIT_TRANSACTIONS: OFF only (the login default, which drivers send
//     to say "autocommit"). ON opens a transaction with nearly every
//     statement, which attaches the session to its backend anyway; pinning
//     it says so plainly instead of replaying a state that defeats borrowing.
//   - CURSOR_CLOSE_ON_COMMIT: OFF only. ON matters only to a session that has
//     cursors, which pins for the cursor; OFF is the default drivers send.
//   - ARITHIGNORE, NUMERIC_ROUNDABORT, FMTONLY, FORCEPLAN, NOEXEC, PARSEONLY,
//     REMOTE_PROC_TRANSACTIONS, SHOWPLAN_*, NO_BROWSETABLE: never. They are
//     not in the allow-list, are rare in driver connect batches, and
//     some change what the server returns (FMTONLY, NOEXEC, SHOWPLAN_*,
//     NO_BROWSETABLE) in ways a tool expects to last; they pin.
var replayBool = map[string]struct{ on, off bool }{
	"ANSI_NULLS": {true, true}, "ANSI_NULL_DFLT_ON": {true, true},
	"ANSI_NULL_DFLT_OFF": {true, true}, "ANSI_PADDING": {true, true},
	"ANSI_WARNINGS": {true, true}, "ARITHABORT": {true, true},
	"CONCAT_NULL_YIELDS_NULL": {true, true}, "QUOTED_IDENTIFIER": {true, true},
	"NOCOUNT": {true, true}, "XACT_ABORT": {true, true},
	"ANSI_DEFAULTS":          {false, true},
	"IMPLICIT_TRANSACTIONS":  {false, true},
	"CURSOR_CLOSE_ON_COMMIT": {false, true},
}

// Valued options replayed when their value is a literal: DATEFIRST,
// DATEFORMAT, LANGUAGE, LOCK_TIMEOUT, TEXTSIZE, and TRANSACTION ISOLATION
// LEVEL. A @variable value pins (the variable is gone when the SET is
// replayed); SET LANGUAGE @v pins with reason Language.

// ReplayAllowed reports whether a normalised SET statement (an element of
// Batch.Replay) is on the replay allow-list. It is how a caller re-checks a
// recorded list, e.g. one read from configuration or another version.
func ReplayAllowed(stmt string) bool {
	b := ScanBatch(stmt)
	return len(b.Pins) == 0 && len(b.Replay) == 1 && b.Replay[0] == stmt
}

// replayKey is the part of a normalised SET statement that names what it
// sets: "SET NOCOUNT ON" -> "NOCOUNT", "SET TRANSACTION ISOLATION LEVEL
// READ COMMITTED" -> "TRANSACTION".
func replayKey(stmt string) string {
	f := strings.Fields(stmt)
	if len(f) < 2 {
		return stmt
	}
	return f[1]
}

// MergeReplay returns the session's SET history after a batch's Replay
// list: each option keeps only its latest statement, placed where it last
// occurred, so replaying the result gives the same state as replaying the
// whole history (ANSI_DEFAULTS OFF, which sets several options, keeps its
// place relative to the options it overrides). The result is a new slice.
func MergeReplay(history, batch []string) []string {
	out := make([]string, 0, len(history)+len(batch))
	out = append(out, history...)
	for _, s := range batch {
		k := replayKey(s)
		for i := 0; i < len(out); i++ {
			if replayKey(out[i]) == k {
				out = append(out[:i], out[i+1:]...)
				i--
			}
		}
		out = append(out, s)
	}
	return out
}
