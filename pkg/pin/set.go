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
// which values are safe to replay after RESETCONNECTION. The rule: an
// option is replayable when it changes only how this session's own
// statements behave, RESETCONNECTION restores its login default, and
// whatever it leads to that outlives a request (a transaction) is reported
// by the server and tracked by the caller. The decision, option by option:
//
//   - ANSI_NULLS, ANSI_NULL_DFLT_ON, ANSI_NULL_DFLT_OFF, ANSI_PADDING,
//     ANSI_WARNINGS, ARITHABORT, CONCAT_NULL_YIELDS_NULL, QUOTED_IDENTIFIER,
//     NOCOUNT, XACT_ABORT: both values, by the rule.
//   - NUMERIC_ROUNDABORT: both values. Not in the list; added
//     because tedious sends "set numeric_roundabort off" at every connect.
//     It is the same kind of option as ARITHABORT.
//   - IMPLICIT_TRANSACTIONS: both values. OFF is what drivers send for
//     autocommit. ON is what jTDS (setAutoCommit(false)) and FreeTDS ODBC
//     (autocommit off, the DB-API default) send: with it, a statement opens
//     a transaction, the server says so with ENVCHANGE 8, and the session
//     stays on its backend until COMMIT/ROLLBACK (ENVCHANGE 9/10) like any
//     transaction. Between transactions the option alone is safe to replay;
//     pinning it would pin every JDBC session that ever ran a transaction.
//   - ANSI_DEFAULTS: both values. It is a shorthand for ANSI_NULLS,
//     ANSI_NULL_DFLT_ON, ANSI_PADDING, ANSI_WARNINGS, QUOTED_IDENTIFIER,
//     IMPLICIT_TRANSACTIONS and CURSOR_CLOSE_ON_COMMIT, all replayable.
//   - CURSOR_CLOSE_ON_COMMIT: both values. It matters only to a session
//     with open cursors, and cursors pin by themselves.
//   - ARITHIGNORE, FMTONLY, FORCEPLAN, NOEXEC, PARSEONLY,
//     REMOTE_PROC_TRANSACTIONS, SHOWPLAN_*, NO_BROWSETABLE: never. They are
//     not in the list, no measured driver sends them at connect, and
//     several change what the server returns (FMTONLY, NOEXEC, SHOWPLAN_*,
//     NO_BROWSETABLE) for tools that expect it to last; they pin.
var replayBool = map[string]struct{ on, off bool }{
	"ANSI_NULLS": {true, true}, "ANSI_NULL_DFLT_ON": {true, true},
	"ANSI_NULL_DFLT_OFF": {true, true}, "ANSI_PADDING": {true, true},
	"ANSI_WARNINGS": {true, true}, "ARITHABORT": {true, true},
	"CONCAT_NULL_YIELDS_NULL": {true, true}, "QUOTED_IDENTIFIER": {true, true},
	"NOCOUNT": {true, true}, "XACT_ABORT": {true, true},
	"NUMERIC_ROUNDABORT": {true, true}, "IMPLICIT_TRANSACTIONS": {true, true},
	"ANSI_DEFAULTS": {true, true}, "CURSOR_CLOSE_ON_COMMIT": {true, true},
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
