package engine

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// TxEvent is a change of the session's transaction state.
type TxEvent uint8

// Transaction events reported through Sink.Tx.
const (
	TxNone     TxEvent = iota
	TxBegin            // a transaction started (@@TRANCOUNT went 0 -> 1)
	TxCommit           // the outermost transaction committed (1 -> 0)
	TxRollback         // the transaction rolled back (n -> 0)
)

func (e TxEvent) String() string {
	switch e {
	case TxBegin:
		return "begin"
	case TxCommit:
		return "commit"
	case TxRollback:
		return "rollback"
	}
	return "none"
}

// Sink receives the results of a batch as they are produced. Rows are
// streamed: a large SELECT is never held in memory. The sink owns each vals
// slice passed to Row.
type Sink interface {
	Columns(cols []Column) error         // start of a result set
	Row(vals []any) error                // one row of the current result set
	Done(d Done) error                   // end of one statement
	Error(e *SQLError) error             // an error inside the batch (statement-level)
	Info(number int32, msg string) error // PRINT, RAISERROR with severity <= 10
	Tx(ev TxEvent, trancount int) error  // the transaction began, committed or rolled back
	Database(name string) error          // USE changed the database
}

// Done ends one statement. RowCount is meaningful when HasCount is set
// (SET NOCOUNT OFF and a statement that counts rows: SELECT, INSERT, UPDATE,
// DELETE). Error is set after an error in the statement.
type Done struct {
	RowCount int64
	HasCount bool
	Error    bool
	// Cmd is the statement's CurCmd as SQL Server reports it in DONE
	// (Cmd* constants; see curCmd). Clients use it: go-mssqldb (and so
	// sqlcmd) reports a DONE_COUNT as rows affected only when it is not
	// CmdSelect or columns came back.
	Cmd uint16
}

// CurCmd values of DONE tokens. [MS-TDS] 2.2.7.6 leaves them to the
// application layer; these are SQL Server's, as seen in real server
// answers (the capture each comes from is named in tools/standin/README.md).
// Those marked "unverified" have no capture behind them.
const (
	CmdNone         uint16 = 0x00 // the login's DONE
	CmdSelect       uint16 = 0xC1 // SELECT (also SELECT @v = ...)
	CmdInsert       uint16 = 0xC3
	CmdDelete       uint16 = 0xC4
	CmdUpdate       uint16 = 0xC5
	CmdCreate       uint16 = 0xC6 // CREATE TABLE (used for every CREATE)
	CmdDrop         uint16 = 0xC7 // DROP TABLE (used for every DROP)
	CmdRollback     uint16 = 0xD2 // unverified
	CmdBeginTran    uint16 = 0xD4 // unverified
	CmdCommit       uint16 = 0xD5
	CmdExecute      uint16 = 0xE0 // the DONEPROC that ends an RPC call
	CmdSetIsolation uint16 = 0xF9 // SET TRANSACTION ISOLATION LEVEL
	CmdSet          uint16 = 0xBA // other SET options
	CmdTransMgr     uint16 = 0xFD // a transaction manager request (TM_BEGIN_XACT)
)

// curCmd maps a statement's first keyword(s) to its CurCmd. Statements
// with no SQL Server value on record (DECLARE, PRINT, USE, EXEC, ...)
// report CmdSelect, as before; none of them sets DONE_COUNT.
func curCmd(head string, toks []token) uint16 {
	switch head {
	case "INSERT":
		return CmdInsert
	case "UPDATE":
		return CmdUpdate
	case "DELETE":
		return CmdDelete
	case "WITH":
		switch withMainVerb(toks) {
		case "INSERT":
			return CmdInsert
		case "UPDATE":
			return CmdUpdate
		case "DELETE":
			return CmdDelete
		}
	case "CREATE":
		return CmdCreate
	case "DROP":
		return CmdDrop
	case "COMMIT":
		return CmdCommit
	case "ROLLBACK":
		return CmdRollback
	case "BEGIN":
		return CmdBeginTran
	case "SET":
		if len(toks) > 1 && toks[1].is("TRANSACTION") {
			return CmdSetIsolation
		}
		return CmdSet
	}
	return CmdSelect
}

// SessionInfo describes the login a session belongs to.
type SessionInfo struct {
	ServerName string // @@SERVERNAME
	SPID       uint16 // @@SPID
	Login      string // SUSER_NAME(), SYSTEM_USER
	Version    string // @@VERSION text ("" = a built-in SQL Server 2022-like text)
}

// Param is a parameter value for sp_executesql-style batches: Name is
// "@p1" (the '@' is optional), Value one of the row value types (int64,
// float64, string, bool, []byte, time.Time, nil; other integer and float
// types are accepted too).
type Param struct {
	Name  string
	Value any
	// Type is the parameter's declared T-SQL type ("numeric(5,3)"), from
	// sp_executesql's declaration list; may be empty. Only a DECIMAL or
	// NUMERIC declaration is used (the value is a decimal string, which
	// would otherwise read back as NVARCHAR); other types are inferred
	// from Value.
	Type string
}

// variable is a T-SQL variable or parameter of the running batch.
type variable struct {
	col   Column
	value any
}

// Session is one client connection's state: current database, transaction,
// SET options, #temp tables and identity values. A session runs one batch at
// a time; its methods are safe to call from several goroutines but are
// serialised.
type Session struct {
	e       *Engine
	info    SessionInfo
	loginDB *database

	mu           sync.Mutex
	db           *database
	conn         *sql.Conn // nil until first used; released after each batch when no state needs it
	trancount    int
	savepoints   map[string]bool
	hasTemp      bool
	nocount      bool
	xactAbort    bool
	implicitTx   bool // SET IMPLICIT_TRANSACTIONS ON
	language     string
	textsize     int64
	opts         map[string]string
	lastIdentity any
	rowcount     int64
	lastErr      int32
	vars         map[string]*variable
	caught       *SQLError
	closed       bool

	// Published copies for the getters, which must not take mu: a Sink may
	// call them from inside ExecBatch.
	pubTran atomic.Int64
	pubDB   atomic.Pointer[database]
	pubLang atomic.Pointer[string]
}

// publish refreshes the values the getters report.
func (s *Session) publish() {
	s.pubTran.Store(int64(s.trancount))
	s.pubDB.Store(s.db)
	lang := s.language
	s.pubLang.Store(&lang)
}

// DefaultLanguage is the session language after login and after Reset.
const DefaultLanguage = "us_english"

// DefaultTextSize is @@TEXTSIZE after login.
const DefaultTextSize = 4096

// NewSession starts a session in database ("" = master). An unknown database
// yields a *SQLError 4060, as a login to it would.
func (e *Engine) NewSession(info SessionInfo, database string) (*Session, error) {
	if database == "" {
		database = "master"
	}
	d := e.lookup(database)
	if d == nil {
		return nil, newErr(ErrCannotOpenDB, 11, "Cannot open database \"%s\" requested by the login. The login failed.", database)
	}
	s := &Session{e: e, info: info, loginDB: d, db: d}
	s.resetOptions()
	s.publish()
	return s, nil
}

func (s *Session) resetOptions() {
	s.nocount = false
	s.xactAbort = false
	s.implicitTx = false
	s.language = DefaultLanguage
	s.textsize = DefaultTextSize
	s.opts = map[string]string{}
	s.savepoints = map[string]bool{}
	s.lastIdentity = nil
	s.rowcount = 0
	s.lastErr = 0
	s.caught = nil
}

// Database returns the current database name. Like TranCount and Language
// it does not wait for a running batch, so a Sink may call it.
func (s *Session) Database() string { return s.pubDB.Load().name }

// TranCount returns @@TRANCOUNT.
func (s *Session) TranCount() int { return int(s.pubTran.Load()) }

// Language returns the SET LANGUAGE value (@@LANGUAGE).
func (s *Session) Language() string { return *s.pubLang.Load() }

// varColumn implements varTyper.
func (s *Session) varColumn(name string) (Column, bool) {
	if v, ok := s.vars[name]; ok {
		return v.col, true
	}
	return Column{}, false
}

// getConn returns the session's connection, acquiring it on first use.
func (s *Session) getConn(ctx context.Context) (*sql.Conn, error) {
	if s.conn != nil {
		return s.conn, nil
	}
	c, err := s.db.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	s.conn = c
	return c, nil
}

// releaseConn gives the connection back to the pool. A connection holding
// #temp tables is closed instead, so no other session can ever see them.
func (s *Session) releaseConn() {
	if s.conn == nil {
		return
	}
	if s.trancount > 0 {
		_, _ = s.conn.ExecContext(context.Background(), "ROLLBACK")
		s.trancount = 0
	}
	if s.hasTemp {
		_ = s.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = s.conn.Close()
	s.conn = nil
	s.hasTemp = false
	s.savepoints = map[string]bool{}
	s.publish()
}

// ExecBatch runs a T-SQL batch, reporting results to sink. SQL errors go to
// sink (Error, then Done{Error: true}) and stop the batch; the returned error
// is non-nil only when the sink fails or ctx is canceled (then ctx.Err()).
func (s *Session) ExecBatch(ctx context.Context, sqlText string, params []Param, sink Sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("engine: session closed")
	}
	defer s.afterBatch()
	s.vars = make(map[string]*variable, len(params))
	for _, p := range params {
		name := strings.ToUpper(p.Name)
		if !strings.HasPrefix(name, "@") {
			name = "@" + name
		}
		col := inferColumn(p.Value, false)
		if dc, ok := parseTypeName(p.Type, 30); ok && dc.Kind == KindDecimal {
			if _, isStr := p.Value.(string); isStr || p.Value == nil {
				col = dc
				col.Nullable = true
			}
		}
		s.vars[name] = &variable{col: col, value: p.Value}
	}
	r := &runner{s: s, ctx: ctx, sink: sink}
	err := r.batch(sqlText)
	if ctx.Err() != nil && s.trancount == 0 && s.conn != nil {
		// A statement that ran while ctx ended reports ctx.Err() even if
		// SQLite completed it: a BEGIN (or DDL savepoint) may then be open
		// on the connection with @@TRANCOUNT 0. It must not stay open there
		// or go back to the pool (another session would wait on its locks).
		_, _ = s.conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	}
	return err
}

// afterBatch lets go of the connection when nothing on it must survive.
func (s *Session) afterBatch() {
	if s.conn != nil && s.trancount == 0 && !s.hasTemp {
		s.releaseConn()
	}
}

// Reset implements RESETCONNECTION: roll back an open transaction, drop
// #temp tables, restore SET options and return to the login database.
func (s *Session) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("engine: session closed")
	}
	s.releaseConn()
	s.db = s.loginDB
	s.resetOptions()
	s.publish()
	return nil
}

// Close ends the session, rolling back any open transaction.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.releaseConn()
	s.closed = true
	return nil
}

// Begin starts a transaction (TM_BEGIN_XACT), like BEGIN TRANSACTION.
func (s *Session) Begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.begin(context.Background())
	return err
}

// Commit commits (TM_COMMIT_XACT), like COMMIT TRANSACTION.
func (s *Session) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.commit(context.Background())
	s.afterBatch()
	return err
}

// Rollback rolls back (TM_ROLLBACK_XACT), like ROLLBACK TRANSACTION.
func (s *Session) Rollback() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.rollback(context.Background(), "")
	s.afterBatch()
	return err
}

// begin implements BEGIN TRAN. It returns TxBegin when a transaction started.
func (s *Session) begin(ctx context.Context) (TxEvent, error) {
	defer s.publish()
	if s.trancount > 0 {
		s.trancount++
		return TxNone, nil
	}
	c, err := s.getConn(ctx)
	if err != nil {
		return TxNone, err
	}
	if _, err := c.ExecContext(ctx, "BEGIN"); err != nil {
		return TxNone, s.mapErr(err, "")
	}
	s.trancount = 1
	return TxBegin, nil
}

func (s *Session) commit(ctx context.Context) (TxEvent, error) {
	defer s.publish()
	switch {
	case s.trancount == 0:
		return TxNone, newErr(ErrCommitNoBegin, 16, "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.")
	case s.trancount > 1:
		s.trancount--
		return TxNone, nil
	}
	c, err := s.getConn(ctx)
	if err != nil {
		return TxNone, err
	}
	_, err = c.ExecContext(context.WithoutCancel(ctx), "COMMIT")
	s.trancount = 0
	s.savepoints = map[string]bool{}
	if err != nil {
		if strings.Contains(err.Error(), "no transaction is active") {
			return TxRollback, newErr(3998, 16, "Uncommittable transaction is detected at the end of the batch. The transaction is rolled back.")
		}
		_, _ = c.ExecContext(context.Background(), "ROLLBACK")
		return TxRollback, s.mapErr(err, "")
	}
	return TxCommit, nil
}

func (s *Session) rollback(ctx context.Context, savepoint string) (TxEvent, error) {
	defer s.publish()
	if s.trancount == 0 {
		return TxNone, newErr(ErrRollbackNoBegin, 16, "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.")
	}
	c, err := s.getConn(ctx)
	if err != nil {
		return TxNone, err
	}
	if savepoint != "" {
		if !s.savepoints[strings.ToUpper(savepoint)] {
			return TxNone, newErr(ErrNoSavepoint, 16, "Cannot roll back %s. No transaction or savepoint of that name was found.", savepoint)
		}
		if _, err := c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK TO "+quoteIdent(strings.ToUpper(savepoint))); err != nil {
			return TxNone, s.mapErr(err, "")
		}
		return TxNone, nil
	}
	_, err = c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	s.trancount = 0
	s.savepoints = map[string]bool{}
	if err != nil && !strings.Contains(err.Error(), "no transaction is active") {
		return TxRollback, s.mapErr(err, "")
	}
	return TxRollback, nil
}

// mapErr turns a database error into a *SQLError (or passes ctx errors on).
func (s *Session) mapErr(err error, verb string) error {
	var se *SQLError
	if errors.As(err, &se) {
		return se
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	ec := &errContext{spid: s.info.SPID, database: s.db.name, verb: verb}
	ec.isPrimaryKey = func(table, col string) bool {
		if s.conn == nil {
			return false
		}
		var pk int
		err := s.conn.QueryRowContext(context.Background(),
			"SELECT pk FROM pragma_table_info(?) WHERE name = ? COLLATE NOCASE", table, col).Scan(&pk)
		return err == nil && pk > 0
	}
	return mapSQLiteError(err, ec)
}

// sysValue computes a session value bound as a parameter.
func (s *Session) sysValue(key string) any {
	switch key {
	case "@@SPID":
		return int64(s.info.SPID)
	case "@@TRANCOUNT":
		return int64(s.trancount)
	case "@@ROWCOUNT":
		return s.rowcount
	case "@@ERROR":
		return int64(s.lastErr)
	case "@@IDENTITY", "SCOPE_IDENTITY":
		return s.lastIdentity
	case "@@SERVERNAME":
		return s.info.ServerName
	case "@@SERVICENAME":
		return "MSSQLSERVER"
	case "@@VERSION":
		return s.version()
	case "@@LANGUAGE":
		return s.language
	case "@@TEXTSIZE":
		return s.textsize
	case "@@MAX_PRECISION":
		return int64(38)
	case "@@OPTIONS":
		opts := int64(5496)
		if s.implicitTx {
			opts |= 2
		}
		return opts
	case "@@DATEFIRST":
		return int64(7)
	case "@@LOCK_TIMEOUT":
		return int64(-1)
	case "@@MICROSOFTVERSION":
		return int64(16<<24 | 1000)
	case "@@NESTLEVEL", "@@PROCID", "@@LANGID":
		return int64(0)
	case "@@MAX_CONNECTIONS":
		return int64(32767)
	case "@@FETCH_STATUS":
		return int64(-1)
	case "@@DBTS":
		return []byte{0, 0, 0, 0, 0, 0, 0x07, 0xD0}
	case "DB_NAME":
		return s.db.name
	case "LOGIN":
		return s.info.Login
	case "USER":
		return "dbo"
	case "HOST", "APP":
		return ""
	case "DB_ID":
		for i, n := range s.e.Databases() {
			if strings.EqualFold(n, s.db.name) {
				return int64(i + 1)
			}
		}
		return nil
	case "XACT_STATE":
		if s.trancount > 0 {
			return int64(1)
		}
		return int64(0)
	}
	if s.caught != nil {
		switch key {
		case "ERROR_MESSAGE":
			return s.caught.Message
		case "ERROR_NUMBER":
			return int64(s.caught.Number)
		case "ERROR_SEVERITY":
			return int64(s.caught.Class)
		case "ERROR_STATE":
			return int64(s.caught.State)
		case "ERROR_LINE":
			return int64(s.caught.Line)
		}
	}
	if prop, ok := strings.CutPrefix(key, "PROP:"); ok {
		return s.serverProperty(prop)
	}
	return nil
}

// ProductVersion is what SERVERPROPERTY('ProductVersion') reports.
const ProductVersion = "16.0.1000.6"

func (s *Session) version() string {
	if s.info.Version != "" {
		return s.info.Version
	}
	return "Microsoft SQL Server 2022 (RTM) - " + ProductVersion + " (X64) \n\tOct  8 2022 05:58:25 \n\tCopyright (C) 2022 Microsoft Corporation\n\tDeveloper Edition (64-bit) on Linux (tdsgate stand-in over SQLite)"
}

func (s *Session) serverProperty(prop string) any {
	switch prop {
	case "PRODUCTVERSION":
		return ProductVersion
	case "PRODUCTMAJORVERSION":
		return "16"
	case "PRODUCTMINORVERSION":
		return "0"
	case "PRODUCTLEVEL":
		return "RTM"
	case "EDITION":
		return "Developer Edition (64-bit)"
	case "ENGINEEDITION":
		return int64(3)
	case "SERVERNAME", "MACHINENAME":
		return s.info.ServerName
	case "COLLATION":
		return "SQL_Latin1_General_CP1_CI_AS"
	case "ISCLUSTERED", "ISHADRENABLED", "ISINTEGRATEDSECURITYONLY", "ISFULLTEXTINSTALLED", "ISSINGLEUSER":
		return int64(0)
	case "PROCESSID":
		return int64(s.info.SPID)
	}
	return nil
}

// bindArgs produces the SQLite arguments for a translation's parameters.
func (s *Session) bindArgs(params []sysParam) []any {
	args := make([]any, 0, len(params))
	for _, p := range params {
		var v any
		if name, ok := strings.CutPrefix(p.key, "VAR:"); ok {
			if vr := s.vars[name]; vr != nil {
				v = vr.value
			}
		} else {
			v = s.sysValue(p.key)
		}
		args = append(args, sql.Named(p.name, bindValue(v)))
	}
	return args
}

func (s *Session) String() string {
	return fmt.Sprintf("session(spid=%d db=%s tran=%d)", s.info.SPID, s.db.name, s.trancount)
}
