// Package pin decides, from the text a client sends, whether a session of a
// transaction-pooled bucket must stay on its backend connection ("pin"), and
// which connect-time SET options can instead be replayed after
// RESETCONNECTION on a borrowed connection.
//
// It owns:
//   - the pin reasons (Reason), whose string values are the stable
//     "reason" label of proxy_sessions_pinned_total;
//   - a T-SQL lexer that skips -- and nested /* */ comments, 'string'
//     literals (a doubled quote escapes one; N'...' too), "quoted" and [bracketed]]
//     identifiers, so that a keyword inside any of those never pins;
//   - ScanBatch (SQLBatch text), ScanRPC (RPC by name or well-known
//     ProcID) and ScanDynamic (the text run by EXEC('...') or
//     sp_executesql, whose SET/USE/#temp state ends with it);
//   - the allow-list of SET options that are safe to replay
//     (ReplayAllowed, documented option by option in set.go) and
//     MergeReplay, which folds a session's SET history into the shortest
//     list with the same effect.
//
// The package is pure: strings in, values out, no I/O, no allocation
// proportional to the input beyond the result (the lexer streams), and
// linear time in the input length. It is conservative: anything it cannot
// read safely (an unterminated string or comment, EXEC of a variable, a SET
// it does not know) pins with reason Unknown. What the server reports
// (ENVCHANGE 1/2 for database and language, 8/9/10/17 for transactions) is
// the authority the caller combines with these hints; Batch.BeginsTran and
// Batch.EndsTran are hints only.
//
// What it deliberately does not pin: calls to user procedures (their SET
// options and #temp tables end with them; a procedure that takes a session
// app lock or sets CONTEXT_INFO is not visible from the call), plain
// sp_executesql, and references that imply state only if it already exists
// (a session that has such state is already pinned).
package pin
