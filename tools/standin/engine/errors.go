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

var (
	reNoTable   = regexp.MustCompile(`no such table: (?:\w+\.)?(.+)$`)
	reNoColumn  = regexp.MustCompile(`no such column: (.+)$`)
	reNear      = regexp.MustCompile(`near "((?:[^"]|"")*)": syntax error`)
	reUnique    = regexp.MustCompile(`UNIQUE constraint failed: ([^.,\s]+)\.([^,\s]+)`)
	reNotNull   = regexp.MustCompile(`NOT NULL constraint failed: ([^.\s]+)\.(\S+)`)
	reExists    = regexp.MustCompile(`(?:table|index|view|trigger) (\S+) already exists`)
	reNoFunc    = regexp.MustCompile(`no such function: (\S+)`)
	reWrongArgs = regexp.MustCompile(`wrong number of arguments to function (\S+)\(\)`)
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
