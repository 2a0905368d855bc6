package engine

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLError is a SQL Server error as it would appear in an ERROR token.
type SQLError struct {
	Number  int32
	State   uint8
	Class   uint8
	Message string
	Line    int32
}

func (e *SQLError) Error() string {
	return fmt.Sprintf("mssql: Msg %d, Level %d, State %d, Line %d: %s", e.Number, e.Class, e.State, e.Line, e.Message)
}

// SQL Server error numbers produced by the engine.
const (
	ErrSyntax            = 102
	ErrMustDeclare       = 137
	ErrNotBuiltin        = 195
	ErrInvalidColumn     = 207
	ErrInvalidObject     = 208
	ErrConversion        = 245
	ErrCannotInsertNull  = 515
	ErrConstraint        = 547
	ErrDatabaseNotExist  = 911
	ErrDeadlock          = 1205
	ErrDuplicateKey      = 2627
	ErrUniqueIndex       = 2601
	ErrObjectExists      = 2714
	ErrProcNotFound      = 2812
	ErrCommitNoBegin     = 3902
	ErrRollbackNoBegin   = 3903
	ErrCannotOpenDB      = 4060
	ErrDivideByZero      = 8134
	ErrUserDefined       = 50000
	ErrGeneric           = 50000
	ErrInvalidWaitFor    = 148
	ErrNoSavepoint       = 6401
	ErrUseInTransaction  = 3916
	ErrFeatureNotPresent = 40517
)

func newErr(number int32, class uint8, format string, args ...any) *SQLError {
	return &SQLError{Number: number, State: 1, Class: class, Message: fmt.Sprintf(format, args...)}
}

func syntaxError(near string) *SQLError {
	if near == "" {
		return newErr(ErrSyntax, 15, "Incorrect syntax near the end of the batch.")
	}
	return newErr(ErrSyntax, 15, "Incorrect syntax near '%s'.", near)
}

// syntaxAt is error 102 at toks[i], the token a statement parser could not
// accept. Past the end of toks it is the statement's last token (SQL Server
// names the keyword or operator a truncated statement ends with), and "the
// end of the batch" only when there are no tokens at all. The error carries
// the token's line. Parsers use it instead of indexing toks directly, so a
// truncated or malformed statement is a syntax error, never an index panic.
func syntaxAt(toks []token, i int) *SQLError {
	if len(toks) == 0 {
		return syntaxError("")
	}
	t := toks[len(toks)-1]
	if i >= 0 && i < len(toks) {
		t = toks[i]
	}
	e := syntaxError(t.source())
	e.Line = int32(t.line)
	return e
}

// tokAt returns toks[i], or a zero token (matching no word or operator)
// when i is out of range.
func tokAt(toks []token, i int) token {
	if i >= 0 && i < len(toks) {
		return toks[i]
	}
	return token{kind: tkOp}
}

// splitTopLevel splits toks at the commas outside parentheses into
// [start, end) ranges of toks. An empty range (",," or a trailing ",")
// starts at the comma that follows it or at len(toks), so syntaxAt(toks,
// r[0]) names the offending token.
func splitTopLevel(toks []token) [][2]int {
	var out [][2]int
	depth, start := 0, 0
	for i, t := range toks {
		switch {
		case t.isOp("("):
			depth++
		case t.isOp(")"):
			depth--
		case depth == 0 && t.isOp(","):
			out = append(out, [2]int{start, i})
			start = i + 1
		}
	}
	if len(toks) > 0 {
		out = append(out, [2]int{start, len(toks)})
	}
	return out
}

var (
	reNoTable       = regexp.MustCompile(`no such table: (?:\w+\.)?(.+)$`)
	reNoColumn      = regexp.MustCompile(`no such column: (.+)$`)
	reNear          = regexp.MustCompile(`near "((?:[^"]|"")*)": syntax error`)
	reUnique        = regexp.MustCompile(`UNIQUE constraint failed: ([^.,\s]+)\.([^,\s]+)`)
	reNotNull       = regexp.MustCompile(`NOT NULL constraint failed: ([^.\s]+)\.(\S+)`)
	reExists        = regexp.MustCompile(`(?:table|index|view|trigger) (\S+) already exists`)
	reNoFunc        = regexp.MustCompile(`no such function: (\S+)`)
	reWrongArgs     = regexp.MustCompile(`wrong number of arguments to function (\S+)\(\)`)
	reNoColumnNamed = regexp.MustCompile(`table \S+ has no column named (.+)$`)
	reValuesForCols = regexp.MustCompile(`^(\d+) values for (\d+) columns`)
	reTableValues   = regexp.MustCompile(`table \S+ has \d+ columns but \d+ values were supplied`)
	reDupColumn     = regexp.MustCompile(`duplicate column name: (.+)$`)
	reNoIndex       = regexp.MustCompile(`no such index: (.+)$`)
)

func unquoteSQLite(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '`' && s[len(s)-1] == '`') {
		s = s[1 : len(s)-1]
	}
	return s
}

// mapSQLiteError translates a SQLite error into the SQL Server error a
// client would see. info gives the statement's context (for the duplicate-key
// message, which names the table and whether it is the primary key).
func mapSQLiteError(err error, ctx *errContext) *SQLError {
	var se *SQLError
	if errors.As(err, &se) {
		return se
	}
	msg := err.Error()
	code := 0
	var lerr *sqlite.Error
	if errors.As(err, &lerr) {
		code = lerr.Code()
		msg = lerr.Error()
	}
	// modernc formats as "SQL logic error: <detail> (1)"; keep the detail.
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasSuffix(msg, ")") {
		detail := msg[i+2:]
		if j := strings.LastIndex(detail, " ("); j >= 0 {
			detail = detail[:j]
		}
		msg = detail
	}
	if strings.HasPrefix(msg, "constraint failed: ") {
		msg = strings.TrimPrefix(msg, "constraint failed: ")
	}
	switch code & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return newErr(ErrDeadlock, 13, "Transaction (Process ID %d) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.", ctx.spid)
	}
	if m := reNoTable.FindStringSubmatch(msg); m != nil {
		return newErr(ErrInvalidObject, 16, "Invalid object name '%s'.", unquoteSQLite(m[1]))
	}
	if m := reNoColumn.FindStringSubmatch(msg); m != nil {
		col := unquoteSQLite(m[1])
		if strings.Contains(col, ".") {
			return newErr(4104, 16, "The multi-part identifier \"%s\" could not be bound.", col)
		}
		return newErr(ErrInvalidColumn, 16, "Invalid column name '%s'.", col)
	}
	if m := reNear.FindStringSubmatch(msg); m != nil {
		return syntaxError(strings.ReplaceAll(m[1], `""`, `"`))
	}
	if strings.Contains(msg, "incomplete input") {
		return syntaxError(ctx.lastToken)
	}
	if m := reUnique.FindStringSubmatch(msg); m != nil {
		table, col := unquoteSQLite(m[1]), unquoteSQLite(m[2])
		if ctx.isPrimaryKey != nil && ctx.isPrimaryKey(table, col) {
			e := newErr(ErrDuplicateKey, 14, "Violation of PRIMARY KEY constraint 'PK_%s'. Cannot insert duplicate key in object 'dbo.%s'.", table, table)
			return e
		}
		return newErr(ErrDuplicateKey, 14, "Violation of UNIQUE KEY constraint 'UQ_%s_%s'. Cannot insert duplicate key in object 'dbo.%s'.", table, col, table)
	}
	if m := reNotNull.FindStringSubmatch(msg); m != nil {
		verb := "INSERT"
		if ctx.verb != "" {
			verb = ctx.verb
		}
		return newErr(ErrCannotInsertNull, 16, "Cannot insert the value NULL into column '%s', table '%s.dbo.%s'; column does not allow nulls. %s fails.", unquoteSQLite(m[2]), ctx.database, unquoteSQLite(m[1]), verb)
	}
	if strings.Contains(msg, "FOREIGN KEY constraint failed") {
		return newErr(ErrConstraint, 16, "The %s statement conflicted with the FOREIGN KEY constraint. The conflict occurred in database '%s'.", ctx.verbOr("INSERT"), ctx.database)
	}
	if strings.Contains(msg, "CHECK constraint failed") {
		return newErr(ErrConstraint, 16, "The %s statement conflicted with the CHECK constraint. The conflict occurred in database '%s'.", ctx.verbOr("INSERT"), ctx.database)
	}
	if m := reExists.FindStringSubmatch(msg); m != nil {
		return newErr(ErrObjectExists, 16, "There is already an object named '%s' in the database.", unquoteSQLite(m[1]))
	}
	if m := reNoFunc.FindStringSubmatch(msg); m != nil {
		return newErr(ErrNotBuiltin, 15, "'%s' is not a recognized built-in function name.", unquoteSQLite(m[1]))
	}
	if m := reWrongArgs.FindStringSubmatch(msg); m != nil {
		return newErr(174, 15, "The %s function requires a different number of arguments.", unquoteSQLite(m[1]))
	}
	if m := reNoColumnNamed.FindStringSubmatch(msg); m != nil {
		return newErr(ErrInvalidColumn, 16, "Invalid column name '%s'.", unquoteSQLite(m[1]))
	}
	if m := reValuesForCols.FindStringSubmatch(msg); m != nil {
		if len(m[1]) < len(m[2]) || len(m[1]) == len(m[2]) && m[1] < m[2] {
			return newErr(109, 15, "There are more columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement.")
		}
		return newErr(110, 15, "There are fewer columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement.")
	}
	if reTableValues.MatchString(msg) {
		return newErr(213, 16, "Column name or number of supplied values does not match table definition.")
	}
	if strings.Contains(msg, "no tables specified") {
		return newErr(263, 16, "Must specify table to select from.")
	}
	if strings.Contains(msg, "row value misused") {
		return syntaxError(",") // (a, b) where one value belongs
	}
	if strings.Contains(msg, "do not have the same number of result columns") {
		return newErr(205, 16, "All queries combined using a UNION, INTERSECT or EXCEPT operator must have an equal number of expressions in their target lists.")
	}
	if m := reDupColumn.FindStringSubmatch(msg); m != nil {
		return newErr(2705, 16, "Column names in each table must be unique. Column name '%s' is specified more than once.", unquoteSQLite(m[1]))
	}
	if m := reNoIndex.FindStringSubmatch(msg); m != nil {
		return newErr(3701, 11, "Cannot drop the index '%s', because it does not exist or you do not have permission.", unquoteSQLite(m[1]))
	}
	if strings.Contains(msg, "divide by zero") || strings.Contains(msg, "Divide by zero") {
		return newErr(ErrDivideByZero, 16, "Divide by zero error encountered.")
	}
	if strings.Contains(msg, "syntax error") || strings.Contains(msg, "unrecognized token") {
		return syntaxError(ctx.lastToken)
	}
	return newErr(ErrGeneric, 16, "%s", msg)
}

// errContext carries what mapSQLiteError needs to word a message.
type errContext struct {
	spid         uint16
	database     string
	verb         string // INSERT / UPDATE
	lastToken    string
	isPrimaryKey func(table, col string) bool
}

func (c *errContext) verbOr(def string) string {
	if c.verb != "" {
		return c.verb
	}
	return def
}
