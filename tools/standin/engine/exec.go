package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// flow is how a statement list ended.
type flow uint8

const (
	flowNext     flow = iota // keep going
	flowBreak                // BREAK
	flowContinue             // CONTINUE
	flowReturn               // RETURN
	flowStop                 // an error was reported; the batch ends
)

// runner executes one batch for a session.
type runner struct {
	s        *Session
	ctx      context.Context
	sink     Sink
	tryDepth int
	depth    int    // nested EXEC / sp_executesql
	cmd      uint16 // CurCmd of the running statement (curCmd)
}

// transport marks errors that must end ExecBatch (sink failure, ctx).
type transport struct{ err error }

func (t transport) Error() string { return t.err.Error() }
func (t transport) Unwrap() error { return t.err }

func (r *runner) batch(sqlText string) (err error) {
	// A bug in the translator must cost the client one batch, never the
	// whole stand-in: a panic becomes SQL Server's internal error 8630.
	defer func() {
		if p := recover(); p != nil {
			err = r.report(newErr(8630, 16, "Internal Query Processor Error: the stand-in could not run this batch (%v).", p))
		}
	}()
	stmts, serr := compile(sqlText)
	if serr != nil {
		return r.report(serr)
	}
	_, err = r.list(stmts)
	return err
}

// compile lexes and splits a batch.
func compile(sqlText string) ([]*stmt, *SQLError) {
	toks, lerr := lex(sqlText)
	if lerr != nil {
		e := newErr(105, 15, "%s", lerr.msg)
		e.Line = int32(lerr.line)
		return nil, e
	}
	stmts, perr := parseBatch(toks)
	if perr != nil {
		e := syntaxError(perr.near)
		e.Line = int32(perr.line)
		return nil, e
	}
	return stmts, nil
}

// report sends an error that ends the batch.
func (r *runner) report(e *SQLError) error {
	r.s.lastErr = e.Number
	if r.s.xactAbort && r.s.trancount > 0 {
		if ev, _ := r.s.rollback(context.WithoutCancel(r.ctx), ""); ev != TxNone {
			defer func() { _ = r.sink.Tx(ev, 0) }()
		}
	}
	if err := r.sink.Error(e); err != nil {
		return err
	}
	return r.sink.Done(Done{Error: true, Cmd: r.cmd})
}

// list runs statements in order. A *SQLError inside TRY returns as
// (flowStop, *SQLError); outside TRY it is reported and (flowStop, nil)
// returned. Other errors are transport errors.
func (r *runner) list(stmts []*stmt) (flow, error) {
	for _, st := range stmts {
		if err := r.ctx.Err(); err != nil {
			return flowStop, err
		}
		fl, err := r.one(st)
		if err != nil {
			var se *SQLError
			if errors.As(err, &se) {
				if r.ctx.Err() != nil {
					return flowStop, r.ctx.Err()
				}
				if se.Line == 0 {
					placeSyntaxError(st, se)
					se.Line = errorLine(st, se)
				}
				if r.tryDepth > 0 {
					return flowStop, se
				}
				return flowStop, r.report(se)
			}
			return flowStop, err
		}
		if fl != flowNext {
			return fl, nil
		}
	}
	return flowNext, nil
}

// one runs one statement.
func (r *runner) one(st *stmt) (flow, error) {
	switch st.kind {
	case skBlock:
		return r.list(st.body)
	case skIf:
		ok, err := r.cond(st.toks)
		if err != nil {
			return flowStop, err
		}
		if ok {
			return r.list(st.body)
		}
		return r.list(st.els)
	case skWhile:
		for {
			if err := r.ctx.Err(); err != nil {
				return flowStop, err
			}
			ok, err := r.cond(st.toks)
			if err != nil {
				return flowStop, err
			}
			if !ok {
				return flowNext, nil
			}
			fl, err := r.list(st.body)
			if err != nil {
				return fl, err
			}
			switch fl {
			case flowBreak:
				return flowNext, nil
			case flowReturn, flowStop:
				return fl, nil
			}
		}
	case skTry:
		r.tryDepth++
		fl, err := r.list(st.body)
		r.tryDepth--
		var se *SQLError
		if err == nil || !errors.As(err, &se) {
			return fl, err
		}
		prev := r.s.caught
		r.s.caught = se
		r.s.lastErr = se.Number
		fl, err = r.list(st.els)
		r.s.caught = prev
		return fl, err
	}
	return r.simple(st)
}

// done reports the end of a statement.
func (r *runner) done(count int64, hasCount bool) error {
	if err := r.sink.Done(Done{RowCount: count, HasCount: hasCount && !r.s.nocount, Cmd: r.cmd}); err != nil {
		return transport{err}
	}
	return nil
}

func (r *runner) simple(st *stmt) (flow, error) {
	toks := st.toks
	s := r.s
	head := st.head()
	r.cmd = curCmd(head, toks)
	if s.implicitTx && s.trancount == 0 && startsImplicitTx(head, toks) {
		if err := r.implicitBegin(); err != nil {
			return flowStop, err
		}
	}
	switch head {
	case "SELECT":
		return flowNext, r.query(toks)
	case "WITH":
		if withMainVerb(toks) == "SELECT" {
			return flowNext, r.query(toks)
		}
		return flowNext, r.dml(toks)
	case "INSERT", "UPDATE", "DELETE", "MERGE":
		return flowNext, r.dml(toks)
	case "BEGIN":
		ev, err := s.begin(r.ctx)
		if err != nil {
			return flowStop, err
		}
		return flowNext, r.txDone(ev)
	case "COMMIT":
		ev, err := s.commit(r.ctx)
		return r.txEnded(ev, err)
	case "ROLLBACK":
		name := ""
		if len(toks) >= 3 && isTranWord(toks[1]) && toks[2].isIdent() {
			name = toks[2].text
		}
		ev, err := s.rollback(r.ctx, name)
		return r.txEnded(ev, err)
	case "SAVE":
		if len(toks) < 3 || !isTranWord(toks[1]) || !toks[2].isIdent() {
			return flowStop, syntaxAt(toks, len(toks))
		}
		if s.trancount == 0 {
			return flowStop, newErr(628, 16, "Cannot issue SAVE TRANSACTION when there is no active transaction.")
		}
		name := strings.ToUpper(toks[2].text)
		c, err := s.getConn(r.ctx)
		if err != nil {
			return flowStop, err
		}
		if _, err := c.ExecContext(r.ctx, "SAVEPOINT "+quoteIdent(name)); err != nil {
			return flowStop, s.mapErr(err, "")
		}
		s.savepoints[name] = true
		return flowNext, r.done(0, false)
	case "SET":
		return flowNext, r.set(toks)
	case "USE":
		return flowNext, r.use(toks)
	case "WAITFOR":
		return flowNext, r.waitfor(toks)
	case "CREATE":
		return flowNext, r.create(toks)
	case "DROP":
		return flowNext, r.drop(toks)
	case "ALTER":
		return flowNext, r.alter(toks)
	case "TRUNCATE":
		return flowNext, r.truncate(toks)
	case "DECLARE":
		return flowNext, r.declare(toks)
	case "PRINT":
		if len(toks) < 2 {
			return flowStop, syntaxAt(toks, 1)
		}
		v, err := r.eval(toks[1:])
		if err != nil {
			return flowStop, err
		}
		msg, _ := coerce(v, &Column{Kind: KindNVarChar})
		str, _ := msg.(string)
		if err := r.sink.Info(0, str); err != nil {
			return flowStop, transport{err}
		}
		return flowNext, nil
	case "EXEC", "EXECUTE":
		return r.exec(toks)
	case "RAISERROR":
		return flowNext, r.raiserror(toks, st.line)
	case "THROW":
		return flowStop, r.throw(toks)
	case "RETURN":
		return flowReturn, nil
	case "BREAK":
		return flowBreak, nil
	case "CONTINUE":
		return flowContinue, nil
	case "GO":
		return flowNext, nil
	}
	// A system procedure called without EXEC (as T-SQL allows for a
	// batch's first statement; FreeTDS ODBC sends "sp_datatype_info_100 12,3").
	if toks[0].kind == tkWord && strings.HasPrefix(toks[0].up, "SP_") {
		exec := token{kind: tkWord, text: "EXEC", up: "EXEC", line: toks[0].line}
		return r.exec(append([]token{exec}, toks...))
	}
	return flowStop, syntaxError(toks[0].source())
}

// startsImplicitTx reports whether a statement is one that, under SET
// IMPLICIT_TRANSACTIONS ON, begins a transaction when none is open: ALTER
// TABLE, BEGIN TRANSACTION, CREATE, DELETE, DROP, INSERT, MERGE, SELECT (only
// one that reads a table, or SELECT ... INTO), TRUNCATE TABLE, UPDATE. CREATE
// and DROP DATABASE cannot run inside a transaction and do not.
func startsImplicitTx(head string, toks []token) bool {
	switch head {
	case "SELECT", "WITH":
		return readsTable(toks)
	case "INSERT", "UPDATE", "DELETE", "MERGE", "BEGIN", "ALTER", "TRUNCATE":
		return true
	case "CREATE", "DROP":
		return len(toks) < 2 || !toks[1].is("DATABASE")
	}
	return false
}

// readsTable reports whether a SELECT (or an expression) reads a table: it
// has a FROM (or INTO) anywhere, subqueries included. "SELECT 1",
// "SELECT @@TRANCOUNT" and "IF @@TRANCOUNT > 0" do not.
func readsTable(toks []token) bool {
	for _, t := range toks {
		if t.is("FROM") || t.is("INTO") {
			return true
		}
	}
	return false
}

// implicitBegin starts the transaction SET IMPLICIT_TRANSACTIONS ON calls
// for (the unseen BEGIN TRANSACTION before the statement), when none is open.
func (r *runner) implicitBegin() error {
	s := r.s
	if !s.implicitTx || s.trancount > 0 {
		return nil
	}
	ev, err := s.begin(r.ctx)
	if err != nil {
		return err
	}
	if ev != TxNone {
		if err := r.sink.Tx(ev, s.trancount); err != nil {
			return transport{err}
		}
	}
	return nil
}

// txEnded finishes a COMMIT or ROLLBACK: the transaction event it caused
// is reported even when the statement also failed.
func (r *runner) txEnded(ev TxEvent, err error) (flow, error) {
	if err == nil {
		return flowNext, r.txDone(ev)
	}
	if ev != TxNone {
		if terr := r.sink.Tx(ev, r.s.trancount); terr != nil {
			return flowStop, transport{terr}
		}
	}
	return flowStop, err
}

// txDone reports a transaction event and the statement's end.
func (r *runner) txDone(ev TxEvent) error {
	if ev != TxNone {
		if err := r.sink.Tx(ev, r.s.trancount); err != nil {
			return transport{err}
		}
	}
	r.s.rowcount = 0
	return r.done(0, false)
}

// withMainVerb returns the statement keyword after a WITH clause's CTEs.
func withMainVerb(toks []token) string {
	depth := 0
	for _, t := range toks[1:] {
		switch {
		case t.isOp("("):
			depth++
		case t.isOp(")"):
			depth--
		case depth == 0 && (t.is("SELECT") || t.is("INSERT") || t.is("UPDATE") || t.is("DELETE")):
			return t.up
		}
	}
	return ""
}

// rowScanner reads rows into fresh []any slices.
type rowScanner struct {
	rows *sql.Rows
	ptrs []any
	vals []any
}

func newRowScanner(rows *sql.Rows, n int) *rowScanner {
	rs := &rowScanner{rows: rows, ptrs: make([]any, n), vals: make([]any, n)}
	for i := range rs.vals {
		rs.ptrs[i] = &rs.vals[i]
	}
	return rs
}

func (rs *rowScanner) next() ([]any, bool, error) {
	if !rs.rows.Next() {
		return nil, false, rs.rows.Err()
	}
	if err := rs.rows.Scan(rs.ptrs...); err != nil {
		return nil, false, err
	}
	out := make([]any, len(rs.vals))
	copy(out, rs.vals)
	return out, true, nil
}

// peekRows is how many rows a SELECT may read ahead to type expression
// columns whose first values are NULL.
const peekRows = 16

// query runs a row-returning statement and streams its rows.
func (r *runner) query(toks []token) error {
	s := r.s
	tr := newTranslator(s)
	tx, serr := tr.translateQuery(toks)
	if serr != nil {
		return serr
	}
	c, err := s.getConn(r.ctx)
	if err != nil {
		return err
	}
	args := s.bindArgs(tx.params)
	switch {
	case tx.into != "":
		return r.selectInto(c, tx, args)
	case len(tx.assign) > 0:
		return r.selectAssign(c, tx, args)
	}
	rows, err := c.QueryContext(r.ctx, tx.sql, args...)
	if err != nil {
		return s.mapErr(err, "")
	}
	defer rows.Close()
	cts, err := rows.ColumnTypes()
	if err != nil {
		return s.mapErr(err, "")
	}
	n := len(cts)
	cols := make([]Column, n)
	known := make([]bool, n)
	hints := spreadHints(tx.hints, n)
	needPeek := false
	for i, ct := range cts {
		name := ct.Name()
		h := hints[i]
		if h.noName {
			name = ""
		}
		switch {
		case h.col != nil:
			cols[i] = *h.col
			known[i] = true
		default:
			if col, ok := parseTypeName(ct.DatabaseTypeName(), 1); ok {
				cols[i] = col
				known[i] = true
			} else {
				needPeek = true
			}
		}
		cols[i].Name = name
		if cols[i].Kind == KindNVarChar || cols[i].Kind == KindVarChar || cols[i].Kind == KindDecimal || cols[i].Kind == KindVarBinary {
			cols[i].Nullable = true
		}
	}
	rs := newRowScanner(rows, n)
	var buf [][]any
	if needPeek {
		for len(buf) < peekRows {
			row, ok, err := rs.next()
			if err != nil {
				return s.mapErr(err, "")
			}
			if !ok {
				break
			}
			buf = append(buf, row)
			done := true
			for i := range cols {
				if !known[i] && row[i] == nil {
					done = false
				}
			}
			if done {
				break
			}
		}
		for i := range cols {
			if known[i] {
				continue
			}
			var sample any
			longest := 0
			for _, row := range buf {
				if row[i] != nil && sample == nil {
					sample = row[i]
				}
				if str, ok := row[i].(string); ok {
					longest = max(longest, utf8.RuneCountInString(str))
				}
			}
			col := inferColumn(sample, tx.multiRow)
			if col.Kind == KindNVarChar && !tx.multiRow && longest > 0 && col.Size > 0 {
				col.Size = max(col.Size, longest)
				if col.Size > maxChars {
					col.Size = -1
				}
			}
			col.Name = cols[i].Name
			col.Nullable = true
			cols[i] = col
		}
	}
	if err := r.sink.Columns(cols); err != nil {
		return transport{err}
	}
	var count int64
	emit := func(row []any) error {
		for i := range row {
			v, cerr := coerce(row[i], &cols[i])
			if cerr != nil {
				return newErr(cerr.number, 16, "%s", cerr.msg)
			}
			row[i] = v
		}
		count++
		if err := r.sink.Row(row); err != nil {
			return transport{err}
		}
		return nil
	}
	for _, row := range buf {
		if err := emit(row); err != nil {
			return err
		}
	}
	for {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		row, ok, err := rs.next()
		if err != nil {
			return s.mapErr(err, "")
		}
		if !ok {
			break
		}
		if err := emit(row); err != nil {
			return err
		}
	}
	s.rowcount = count
	return r.done(count, true)
}

// spreadHints maps select-list hints onto n result columns (a * expands).
func spreadHints(h []colHint, n int) []colHint {
	out := make([]colHint, n)
	stars := 0
	for _, x := range h {
		if x.star {
			stars++
		}
	}
	if stars == 0 {
		copy(out, h)
		return out
	}
	if stars > 1 {
		for i := 0; i < n && i < len(h) && !h[i].star; i++ {
			out[i] = h[i]
		}
		return out
	}
	j := 0
	for k, x := range h {
		if x.star {
			width := n - (len(h) - 1)
			j += max(width, 0)
			continue
		}
		_ = k
		if j < n {
			out[j] = x
		}
		j++
	}
	return out
}

// selectInto implements SELECT ... INTO new_table.
func (r *runner) selectInto(c *sql.Conn, tx *translation, args []any) error {
	s := r.s
	temp := strings.HasPrefix(tx.into, "#")
	kw := "CREATE TABLE "
	if temp {
		kw = "CREATE TEMP TABLE "
	}
	if _, err := c.ExecContext(r.ctx, kw+quoteIdent(tx.into)+" AS "+tx.sql, args...); err != nil {
		return s.mapErr(err, "")
	}
	if temp {
		s.hasTemp = true
	}
	var n int64
	if err := c.QueryRowContext(r.ctx, "SELECT count(*) FROM "+quoteIdent(tx.into)).Scan(&n); err != nil {
		return s.mapErr(err, "")
	}
	s.rowcount = n
	return r.done(n, true)
}

// selectAssign implements SELECT @a = expr, ... [FROM ...].
func (r *runner) selectAssign(c *sql.Conn, tx *translation, args []any) error {
	s := r.s
	rows, err := c.QueryContext(r.ctx, tx.sql, args...)
	if err != nil {
		return s.mapErr(err, "")
	}
	defer rows.Close()
	rs := newRowScanner(rows, len(tx.assign))
	var n int64
	for {
		row, ok, err := rs.next()
		if err != nil {
			return s.mapErr(err, "")
		}
		if !ok {
			break
		}
		n++
		for i, name := range tx.assign {
			if err := r.assign(name, row[i]); err != nil {
				return err
			}
		}
	}
	s.rowcount = n
	return r.done(n, true)
}

// assign stores a value into a declared variable, converting it to the
// variable's type.
func (r *runner) assign(name string, v any) error {
	vr := r.s.vars[name]
	if vr == nil {
		return newErr(ErrMustDeclare, 15, "Must declare the scalar variable \"%s\".", name)
	}
	cv, cerr := coerce(v, &vr.col)
	if cerr != nil {
		return newErr(cerr.number, 16, "%s", cerr.msg)
	}
	if str, ok := cv.(string); ok && (vr.col.Kind == KindNVarChar || vr.col.Kind == KindVarChar) && vr.col.Size > 0 {
		if rs := []rune(str); len(rs) > vr.col.Size {
			cv = string(rs[:vr.col.Size])
		}
	}
	vr.value = cv
	return nil
}

// dml runs INSERT / UPDATE / DELETE and reports the affected row count.
func (r *runner) dml(toks []token) error {
	s := r.s
	toks = stripNames(toks)
	verb := toks[0].up
	var table string
	switch verb {
	case "INSERT":
		if len(toks) > 1 && !toks[1].is("INTO") {
			toks = append([]token{toks[0], {kind: tkWord, text: "INTO", up: "INTO"}}, toks[1:]...)
		}
		if len(toks) > 2 && toks[2].isIdent() {
			table = toks[2].text
		}
		for _, t := range toks {
			if t.is("OUTPUT") {
				return newErr(ErrFeatureNotPresent, 16, "The OUTPUT clause is not supported by the stand-in.")
			}
		}
	case "DELETE":
		if len(toks) > 1 && toks[1].isIdent() && !toks[1].is("FROM") {
			toks = append([]token{toks[0], {kind: tkWord, text: "FROM", up: "FROM"}}, toks[1:]...)
		}
	}
	tr := newTranslator(s)
	tx, serr := tr.translateStmt(toks)
	if serr != nil {
		return serr
	}
	c, err := s.getConn(r.ctx)
	if err != nil {
		return err
	}
	res, err := c.ExecContext(r.ctx, tx.sql, s.bindArgs(tx.params)...)
	if err != nil {
		return s.mapErr(err, verb)
	}
	n, _ := res.RowsAffected()
	if verb == "INSERT" && n > 0 && table != "" {
		r.noteIdentity(c, table)
	}
	s.rowcount = n
	return r.done(n, true)
}

// noteIdentity records SCOPE_IDENTITY() after an insert into table.
func (r *runner) noteIdentity(c *sql.Conn, table string) {
	schema := "main"
	if strings.HasPrefix(table, "#") {
		schema = "temp"
	}
	var col string
	err := c.QueryRowContext(r.ctx, "SELECT col FROM "+schema+".__standin_identity WHERE tbl = lower(?)", table).Scan(&col)
	if err != nil {
		return
	}
	var id any
	if err := c.QueryRowContext(r.ctx, "SELECT "+quoteIdent(col)+" FROM "+schema+"."+quoteIdent(table)+" WHERE rowid = last_insert_rowid()").Scan(&id); err == nil && id != nil {
		r.s.lastIdentity = id
	}
}

// eval computes a scalar expression.
func (r *runner) eval(toks []token) (any, error) {
	if len(toks) == 1 {
		t := toks[0]
		switch t.kind {
		case tkString:
			return t.text, nil
		case tkNumber:
			if n, err := strconv.ParseInt(t.text, 10, 64); err == nil {
				return n, nil
			}
			if f, err := strconv.ParseFloat(t.text, 64); err == nil {
				return f, nil
			}
		case tkVar:
			if v := r.s.vars[t.up]; v != nil {
				return v.value, nil
			}
		case tkWord:
			if t.up == "NULL" {
				return nil, nil
			}
		}
	}
	if len(toks) == 0 {
		return nil, syntaxError("")
	}
	if c := firstTopLevelComma(toks); c >= 0 {
		return nil, syntaxAt(toks, c) // one value, not a list
	}
	tr := newTranslator(r.s)
	expr, serr := tr.translateExpr(toks)
	if serr != nil {
		return nil, serr
	}
	if r.s.implicitTx && readsTable(toks) {
		if err := r.implicitBegin(); err != nil {
			return nil, err
		}
	}
	return r.scalar("SELECT "+expr, tr.params)
}

func (r *runner) scalar(q string, params []sysParam) (any, error) {
	c, err := r.s.getConn(r.ctx)
	if err != nil {
		return nil, err
	}
	var v any
	if err := c.QueryRowContext(r.ctx, q, r.s.bindArgs(params)...).Scan(&v); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		return nil, r.s.mapErr(err, "")
	}
	return v, nil
}

// cond evaluates an IF / WHILE condition.
func (r *runner) cond(toks []token) (bool, error) {
	tr := newTranslator(r.s)
	expr, serr := tr.translateExpr(toks)
	if serr != nil {
		return false, serr
	}
	if r.s.implicitTx && readsTable(toks) {
		if err := r.implicitBegin(); err != nil {
			return false, err
		}
	}
	v, err := r.scalar("SELECT CASE WHEN "+expr+" THEN 1 ELSE 0 END", tr.params)
	if err != nil {
		return false, err
	}
	n, _ := v.(int64)
	return n == 1, nil
}

// set handles SET: variable assignment or a session option.
func (r *runner) set(toks []token) error {
	s := r.s
	if len(toks) < 2 {
		return syntaxError("SET")
	}
	if toks[1].kind == tkVar {
		if len(toks) < 4 {
			return syntaxAt(toks, len(toks))
		}
		name := toks[1].up
		vr := s.vars[name]
		if vr == nil {
			return newErr(ErrMustDeclare, 15, "Must declare the scalar variable \"%s\".", toks[1].text)
		}
		expr := toks[3:]
		switch op := toks[2].text; op {
		case "=":
		case "+=", "-=", "*=", "/=":
			o := token{kind: tkOp, text: op[:1]}
			if op == "+=" && (vr.col.Kind == KindNVarChar || vr.col.Kind == KindVarChar) {
				o.text = "||"
			}
			expr = append([]token{toks[1], o, {kind: tkOp, text: "("}}, append(append([]token{}, expr...), token{kind: tkOp, text: ")"})...)
		default:
			return syntaxError(toks[2].source())
		}
		v, err := r.eval(expr)
		if err != nil {
			return err
		}
		if err := r.assign(name, v); err != nil {
			return err
		}
		s.rowcount = 1
		return r.done(0, false)
	}
	if toks[1].kind != tkWord {
		return syntaxAt(toks, 1)
	}
	opt := toks[1].up
	val := ""
	if len(toks) > 2 {
		switch toks[2].kind {
		case tkString, tkQIdent:
			val = toks[2].text
		default:
			val = toks[2].text
		}
	}
	upVal := strings.ToUpper(val)
	switch opt {
	case "NOCOUNT", "XACT_ABORT":
		if len(toks) != 3 || upVal != "ON" && upVal != "OFF" {
			return syntaxAt(toks, 2)
		}
		if opt == "NOCOUNT" {
			s.nocount = upVal == "ON"
		} else {
			s.xactAbort = upVal == "ON"
		}
	case "IMPLICIT_TRANSACTIONS":
		// OFF only changes the mode: an open transaction stays open.
		if len(toks) != 3 || upVal != "ON" && upVal != "OFF" {
			return syntaxAt(toks, len(toks))
		}
		s.implicitTx = upVal == "ON"
	case "LANGUAGE":
		if val == "" {
			return syntaxError("LANGUAGE")
		}
		s.language = val
		s.publish()
	case "TEXTSIZE":
		if n, err := strconv.ParseInt(val, 10, 64); err == nil {
			if n <= 0 {
				n = DefaultTextSize
			}
			s.textsize = n
		}
	default:
		// Every other option (ANSI_*, QUOTED_IDENTIFIER, TRANSACTION
		// ISOLATION LEVEL, DATEFORMAT, ...) is accepted and remembered,
		// with no effect, except that ANSI_DEFAULTS ON / OFF also sets
		// IMPLICIT_TRANSACTIONS, as in SQL Server.
		if opt == "ANSI_DEFAULTS" && len(toks) == 3 && (upVal == "ON" || upVal == "OFF") {
			s.implicitTx = upVal == "ON"
		}
		var rest []string
		for _, t := range toks[2:] {
			rest = append(rest, t.source())
		}
		s.opts[opt] = strings.Join(rest, " ")
	}
	s.rowcount = 0
	return r.done(0, false)
}

// use switches the session to another database.
func (r *runner) use(toks []token) error {
	s := r.s
	if len(toks) != 2 || !(toks[1].isIdent() || toks[1].kind == tkString) {
		return syntaxAt(toks, len(toks))
	}
	name := toks[1].text
	d := s.e.lookup(name)
	if d == nil {
		return newErr(ErrDatabaseNotExist, 16, "Database '%s' does not exist. Make sure that the name is entered correctly.", name)
	}
	if d != s.db {
		if s.trancount > 0 {
			return newErr(ErrUseInTransaction, 16, "The stand-in cannot switch databases inside a transaction.")
		}
		s.releaseConn()
		s.db = d
		s.publish()
	}
	if err := r.sink.Database(d.name); err != nil {
		return transport{err}
	}
	s.rowcount = 0
	return r.done(0, false)
}

// waitfor implements WAITFOR DELAY 'hh:mm:ss[.mmm]' and WAITFOR TIME.
func (r *runner) waitfor(toks []token) error {
	if len(toks) < 3 || !(toks[1].is("DELAY") || toks[1].is("TIME")) {
		return syntaxAt(toks, len(toks))
	}
	v, err := r.eval(toks[2:])
	if err != nil {
		return err
	}
	str, _ := coerce(v, &Column{Kind: KindNVarChar})
	text, _ := str.(string)
	d, ok := parseClock(text)
	if !ok {
		return newErr(ErrInvalidWaitFor, 15, "Incorrect time syntax in time string '%s' used with WAITFOR.", text)
	}
	if toks[1].is("TIME") {
		now := time.Now()
		at := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location()).Add(d)
		if !at.After(now) {
			at = at.Add(24 * time.Hour)
		}
		d = time.Until(at)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	return r.done(0, false)
}

// parseClock parses hh:mm[:ss[.fff]] into a duration below 24h.
func parseClock(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, false
	}
	for k, p := range parts {
		// Digits only ("NaN", "+1", "1e1" are not clock fields); a
		// fraction only on the last field.
		whole, frac, dot := strings.Cut(p, ".")
		if !allDigits(whole) || dot && (k != len(parts)-1 || !allDigits(frac)) {
			return 0, false
		}
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		return 0, false
	}
	d := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute
	if len(parts) == 3 {
		sec, err := strconv.ParseFloat(parts[2], 64)
		if err != nil || sec < 0 || sec >= 60 {
			return 0, false
		}
		d += time.Duration(sec * float64(time.Second))
	}
	return d, true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// declare implements DECLARE @a type [= expr], ...
func (r *runner) declare(toks []token) error {
	if len(toks) < 2 {
		return syntaxAt(toks, 1)
	}
	for _, rg := range splitTopLevel(toks[1:]) {
		lo, hi := rg[0]+1, rg[1]+1 // the item is toks[lo:hi]
		if lo >= hi || toks[lo].kind != tkVar {
			return syntaxAt(toks, lo)
		}
		name := toks[lo].up
		i := lo + 1
		if i < hi && toks[i].is("AS") {
			i++
		}
		if i >= hi || !toks[i].isIdent() {
			return syntaxAt(toks, i)
		}
		if toks[i].is("TABLE") || toks[i].is("CURSOR") {
			return newErr(ErrFeatureNotPresent, 16, "DECLARE %s is not supported by the stand-in.", toks[i].up)
		}
		j := i
		for j < hi && !toks[j].isOp("=") {
			j++
		}
		if serr := checkTypeSyntax(toks, i, j); serr != nil {
			return serr
		}
		col, ok := parseTypeName(typeText(toks[i:j]), 1)
		if !ok {
			return newErr(2715, 16, "Column, parameter, or variable #1: Cannot find data type %s.", typeText(toks[i:j]))
		}
		col.Nullable = true
		if _, dup := r.s.vars[name]; dup {
			return newErr(134, 15, "The variable name '%s' has already been declared. Variable names must be unique within a query batch or stored procedure.", toks[lo].text)
		}
		var v any
		if j < hi {
			if j+1 >= hi {
				return syntaxAt(toks, j+1)
			}
			var err error
			if v, err = r.eval(toks[j+1 : hi]); err != nil {
				return err
			}
		}
		r.s.vars[name] = &variable{col: col}
		if err := r.assign(name, v); err != nil {
			return err
		}
	}
	return r.done(0, false)
}

// create handles CREATE TABLE / INDEX / VIEW / DATABASE.
func (r *runner) create(toks []token) error {
	s := r.s
	if len(toks) < 3 || toks[1].kind != tkWord {
		return syntaxAt(toks, 1)
	}
	kind := toks[1].up
	if kind == "UNIQUE" || kind == "CLUSTERED" || kind == "NONCLUSTERED" {
		kind = "INDEX"
	}
	if !sqlObjectKinds[kind] {
		return unknownObjectKind(toks[1])
	}
	tr := newTranslator(s)
	c, err := s.getConn(r.ctx)
	if err != nil {
		return err
	}
	switch kind {
	case "TABLE":
		ct, serr := translateCreateTable(toks, tr)
		if serr != nil {
			return serr
		}
		stmts := []string{ct.sql}
		if ct.identity != nil {
			stmts = append(stmts, identityTriggerSQL(ct)...)
		}
		if err := r.execAll(c, stmts); err != nil {
			return err
		}
		if ct.temp {
			s.hasTemp = true
		}
	case "INDEX":
		q, serr := translateCreateIndex(toks, tr)
		if serr != nil {
			return serr
		}
		if _, err := c.ExecContext(r.ctx, q, s.bindArgs(tr.params)...); err != nil {
			return s.mapErr(err, "")
		}
	case "VIEW":
		tx, serr := tr.translateStmt(toks)
		if serr != nil {
			return serr
		}
		if _, err := c.ExecContext(r.ctx, tx.sql); err != nil {
			return s.mapErr(err, "")
		}
	case "DATABASE":
		if !toks[2].isIdent() {
			return syntaxError(toks[2].source())
		}
		if s.e.HasDatabase(toks[2].text) {
			return newErr(1801, 16, "Database '%s' already exists. Choose a different database name.", toks[2].text)
		}
		if err := s.e.createDatabase(toks[2].text, ""); err != nil {
			return newErr(1802, 16, "CREATE DATABASE failed: %v", err)
		}
	default:
		return newErr(ErrFeatureNotPresent, 16, "CREATE %s is not supported by the stand-in.", toks[1].up)
	}
	return r.done(0, false)
}

// execAll runs DDL statements atomically (inside a savepoint).
func (r *runner) execAll(c *sql.Conn, stmts []string) error {
	if len(stmts) == 1 {
		if _, err := c.ExecContext(r.ctx, stmts[0]); err != nil {
			return r.s.mapErr(err, "")
		}
		return nil
	}
	if _, err := c.ExecContext(r.ctx, "SAVEPOINT standin_ddl"); err != nil {
		return r.s.mapErr(err, "")
	}
	// The savepoint must not outlive this call: outside a transaction it
	// is one, and a canceled ctx must not leave it open on the connection.
	bg := context.WithoutCancel(r.ctx)
	undo := func(err error) error {
		_, _ = c.ExecContext(bg, "ROLLBACK TO standin_ddl")
		_, _ = c.ExecContext(bg, "RELEASE standin_ddl")
		return r.s.mapErr(err, "")
	}
	for _, q := range stmts {
		if _, err := c.ExecContext(r.ctx, q); err != nil {
			return undo(err)
		}
	}
	if _, err := c.ExecContext(bg, "RELEASE standin_ddl"); err != nil {
		return undo(err)
	}
	return nil
}

// drop handles DROP TABLE / VIEW / INDEX [IF EXISTS] a, b.
func (r *runner) drop(toks []token) error {
	s := r.s
	toks = stripNames(toks)
	if len(toks) < 3 || toks[1].kind != tkWord {
		return syntaxAt(toks, 1)
	}
	kind := toks[1].up
	if !sqlObjectKinds[kind] {
		return unknownObjectKind(toks[1])
	}
	i := 2
	ifExists := false
	if i+1 < len(toks) && toks[i].is("IF") && toks[i+1].is("EXISTS") {
		ifExists = true
		i += 2
	}
	switch kind {
	case "TABLE", "VIEW", "INDEX":
	case "DATABASE":
		return newErr(ErrFeatureNotPresent, 16, "DROP DATABASE is not supported by the stand-in.")
	default:
		return newErr(ErrFeatureNotPresent, 16, "DROP %s is not supported by the stand-in.", kind)
	}
	c, err := s.getConn(r.ctx)
	if err != nil {
		return err
	}
	for ; i < len(toks); i++ {
		t := toks[i]
		if t.isOp(",") {
			continue
		}
		if !t.isIdent() {
			return syntaxError(t.source())
		}
		name := t.text
		if kind == "INDEX" && i+2 < len(toks) && toks[i+1].is("ON") {
			i += 2 // DROP INDEX ix ON t
		} else if kind == "INDEX" && i+2 < len(toks) && toks[i+1].isOp(".") {
			name = toks[i+2].text // DROP INDEX t.ix
			i += 2
		}
		q := "DROP " + kind + " "
		if ifExists {
			q += "IF EXISTS "
		}
		stmts := []string{q + quoteIdent(name)}
		if kind == "TABLE" {
			schema := "main"
			if strings.HasPrefix(name, "#") {
				schema = "temp"
			}
			stmts = append(stmts, identityTableSQL(schema), "DELETE FROM "+schema+".__standin_identity WHERE tbl = lower("+token{kind: tkString, text: name}.render()+")")
		}
		if err := r.execAll(c, stmts); err != nil {
			var se *SQLError
			if errors.As(err, &se) && se.Number == ErrInvalidObject {
				what := strings.ToLower(kind)
				return newErr(3701, 11, "Cannot drop the %s '%s', because it does not exist or you do not have permission.", what, name)
			}
			return err
		}
	}
	return r.done(0, false)
}

// sqlObjectKinds are the words SQL Server accepts after CREATE, DROP or
// ALTER; the stand-in supports a few (others fail with 40517), anything
// else is error 343.
var sqlObjectKinds = map[string]bool{
	"TABLE": true, "INDEX": true, "VIEW": true, "DATABASE": true, "PROCEDURE": true, "PROC": true,
	"FUNCTION": true, "TRIGGER": true, "SCHEMA": true, "SEQUENCE": true, "TYPE": true, "LOGIN": true,
	"USER": true, "ROLE": true, "SYNONYM": true, "STATISTICS": true, "ASSEMBLY": true, "QUEUE": true,
	"SERVICE": true, "ENDPOINT": true, "CERTIFICATE": true, "DEFAULT": true, "RULE": true,
	"PARTITION": true, "FULLTEXT": true, "XML": true, "SPATIAL": true, "COLUMNSTORE": true,
	"AGGREGATE": true, "EVENT": true, "MESSAGE": true, "CONTRACT": true, "CREDENTIAL": true,
	"MASTER": true, "SYMMETRIC": true, "ASYMMETRIC": true, "APPLICATION": true, "SERVER": true,
	"EXTERNAL": true, "OR": true, "UNIQUE": true, "CLUSTERED": true, "NONCLUSTERED": true,
}

func unknownObjectKind(t token) *SQLError {
	e := newErr(343, 15, "Unknown object type '%s' used in a CREATE, DROP, or ALTER statement.", t.source())
	e.Line = int32(t.line)
	return e
}

// alterTableActions are the words that may follow ALTER TABLE name.
var alterTableActions = map[string]bool{
	"ADD": true, "DROP": true, "ALTER": true, "WITH": true, "CHECK": true, "NOCHECK": true,
	"SET": true, "SWITCH": true, "REBUILD": true, "ENABLE": true, "DISABLE": true,
}

// alter handles ALTER TABLE t ADD col type / DROP COLUMN c.
func (r *runner) alter(toks []token) error {
	s := r.s
	toks = stripNames(toks)
	if len(toks) < 2 || toks[1].kind != tkWord {
		return syntaxAt(toks, 1)
	}
	if !sqlObjectKinds[toks[1].up] {
		return unknownObjectKind(toks[1])
	}
	if !toks[1].is("TABLE") {
		return newErr(ErrFeatureNotPresent, 16, "Only ALTER TABLE is supported by the stand-in.")
	}
	if len(toks) < 4 {
		return syntaxAt(toks, len(toks))
	}
	if !alterTableActions[toks[3].up] || toks[3].kind != tkWord {
		return syntaxAt(toks, 3)
	}
	if len(toks) < 5 || len(toks) == 5 && toks[4].is("COLUMN") {
		return syntaxAt(toks, len(toks)) // ADD / DROP [COLUMN] what?
	}
	c, err := s.getConn(r.ctx)
	if err != nil {
		return err
	}
	tr := newTranslator(s)
	table := toks[2]
	if !table.isIdent() {
		return syntaxAt(toks, 2)
	}
	switch {
	case toks[3].is("ADD") && len(toks) > 4 && !toks[4].is("CONSTRAINT") && !toks[4].is("PRIMARY") && !toks[4].is("UNIQUE") && !toks[4].is("FOREIGN") && !toks[4].is("CHECK"):
		from := 4
		if toks[from].is("COLUMN") {
			from++
		}
		if from >= len(toks) {
			return syntaxAt(toks, from)
		}
		for _, rg := range splitTopLevel(toks[from:]) {
			lo, hi := from+rg[0], from+rg[1]
			if lo >= hi {
				return syntaxAt(toks, lo)
			}
			q, _, serr := translateColumnDef(toks[lo:hi], tr)
			if serr != nil {
				return serr
			}
			if _, err := c.ExecContext(r.ctx, "ALTER TABLE "+table.render()+" ADD COLUMN "+q); err != nil {
				return s.mapErr(err, "")
			}
		}
	case toks[3].is("DROP") && len(toks) > 5 && toks[4].is("COLUMN"):
		for _, t := range toks[5:] {
			if t.isOp(",") {
				continue
			}
			if _, err := c.ExecContext(r.ctx, "ALTER TABLE "+table.render()+" DROP COLUMN "+t.render()); err != nil {
				return s.mapErr(err, "")
			}
		}
	default:
		return newErr(ErrFeatureNotPresent, 16, "This ALTER TABLE form is not supported by the stand-in.")
	}
	return r.done(0, false)
}

// truncate implements TRUNCATE TABLE t (and resets its identity).
func (r *runner) truncate(toks []token) error {
	s := r.s
	toks = stripNames(toks)
	if len(toks) != 3 || !toks[1].is("TABLE") || !toks[2].isIdent() {
		return syntaxAt(toks, len(toks))
	}
	c, err := s.getConn(r.ctx)
	if err != nil {
		return err
	}
	name := toks[2].text
	schema := "main"
	if strings.HasPrefix(name, "#") {
		schema = "temp"
	}
	if err := r.execAll(c, []string{
		"DELETE FROM " + quoteIdent(name),
		identityTableSQL(schema),
		"UPDATE " + schema + ".__standin_identity SET last = seed - inc WHERE tbl = lower(" + token{kind: tkString, text: name}.render() + ")",
	}); err != nil {
		return err
	}
	return r.done(0, false)
}

// exec implements EXEC sp_executesql, EXEC ('sql') and a few system procs.
func (r *runner) exec(toks []token) (flow, error) {
	s := r.s
	if len(toks) < 2 {
		return flowStop, syntaxError(toks[0].source())
	}
	if r.depth > 16 {
		return flowStop, newErr(217, 16, "Maximum stored procedure, function, trigger, or view nesting level exceeded (limit 32).")
	}
	if toks[1].isOp("(") {
		k := matchParen(toks, 1)
		if k < 0 {
			return flowStop, syntaxError("(")
		}
		v, err := r.eval(toks[2:k])
		if err != nil {
			return flowStop, err
		}
		text, _ := v.(string)
		saved := s.vars
		s.vars = map[string]*variable{}
		defer func() { s.vars = saved }()
		return r.nested(text)
	}
	proc := strings.ToLower(objectBaseName(typeText(stripNames(toks[1:2]))))
	switch proc {
	case "sp_executesql":
		return r.spExecuteSQL(toks, 2)
	case "sp_reset_connection":
		return flowNext, r.done(0, false)
	case "sp_datatype_info_100", "sp_datatype_info":
		return flowNext, r.datatypeInfo(toks[2:])
	}
	return flowStop, newErr(ErrProcNotFound, 16, "Could not find stored procedure '%s'.", toks[1].text)
}

// nested runs SQL text as an inner batch sharing the transaction.
func (r *runner) nested(text string) (flow, error) {
	stmts, serr := compile(text)
	if serr != nil {
		return flowStop, serr
	}
	r.depth++
	defer func() { r.depth-- }()
	fl, err := r.list(stmts)
	if fl == flowReturn {
		fl = flowNext
	}
	return fl, err
}

// spExecuteSQL runs EXEC sp_executesql N'stmt', N'@a int, ...', @a = 1, ...
// The arguments are toks[from:].
func (r *runner) spExecuteSQL(toks []token, from int) (flow, error) {
	s := r.s
	var parts [][]token
	for _, rg := range splitTopLevel(toks[from:]) {
		lo, hi := rg[0]+from, rg[1]+from
		if lo >= hi {
			return flowStop, syntaxAt(toks, lo)
		}
		p := toks[lo:hi]
		if p[0].kind == tkVar && len(p) >= 2 && p[1].isOp("=") && len(p) < 3 {
			return flowStop, syntaxAt(toks, hi) // "@a =" without a value
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return flowStop, newErr(201, 16, "Procedure or function 'sp_executesql' expects parameter '@statement', which was not supplied.")
	}
	stmtV, err := r.eval(stripNamedArg(parts[0]))
	if err != nil {
		return flowStop, err
	}
	text, _ := stmtV.(string)
	scope := map[string]*variable{}
	var order []string
	if len(parts) > 1 {
		defV, err := r.eval(stripNamedArg(parts[1]))
		if err != nil {
			return flowStop, err
		}
		defs, _ := defV.(string)
		dtoks, lerr := lex(defs)
		if lerr != nil {
			return flowStop, syntaxError(lerr.near)
		}
		// Errors in the definition string name its tokens; their lines
		// are the string's own, so the statement's line is reported.
		defErr := func(i int) error {
			e := syntaxAt(dtoks, i)
			e.Line = 0
			return e
		}
		for _, rg := range splitTopLevel(dtoks) {
			lo, hi := rg[0], rg[1]
			if lo >= hi || dtoks[lo].kind != tkVar {
				return flowStop, defErr(lo)
			}
			j := lo + 1
			for j < hi && !dtoks[j].isOp("=") && !dtoks[j].is("OUTPUT") && !dtoks[j].is("OUT") {
				j++
			}
			if serr := checkTypeSyntax(dtoks, lo+1, j); serr != nil {
				serr.Line = 0
				return flowStop, serr
			}
			col, ok := parseTypeName(typeText(dtoks[lo+1:j]), 1)
			if !ok {
				return flowStop, newErr(2715, 16, "Column, parameter, or variable #1: Cannot find data type %s.", typeText(dtoks[lo+1:j]))
			}
			col.Nullable = true
			scope[dtoks[lo].up] = &variable{col: col}
			order = append(order, dtoks[lo].up)
		}
	}
	for k, p := range parts[min(2, len(parts)):] {
		name := ""
		expr := p
		if len(p) >= 3 && p[0].kind == tkVar && p[1].isOp("=") {
			name, expr = p[0].up, p[2:]
		} else if k < len(order) {
			name = order[k]
		}
		if len(expr) > 1 && (expr[len(expr)-1].is("OUTPUT") || expr[len(expr)-1].is("OUT")) {
			expr = expr[:len(expr)-1]
		}
		vr := scope[name]
		if vr == nil {
			return flowStop, newErr(8145, 16, "%s is not a parameter for procedure sp_executesql.", name)
		}
		v, err := r.eval(expr)
		if err != nil {
			return flowStop, err
		}
		cv, cerr := coerce(v, &vr.col)
		if cerr != nil {
			return flowStop, newErr(cerr.number, 16, "%s", cerr.msg)
		}
		vr.value = cv
	}
	saved := s.vars
	s.vars = scope
	defer func() { s.vars = saved }()
	return r.nested(text)
}

func stripNamedArg(p []token) []token {
	if len(p) >= 3 && p[0].kind == tkVar && p[1].isOp("=") {
		return p[2:]
	}
	return p
}

// raiserror implements RAISERROR (msg, severity, state [, args]).
func (r *runner) raiserror(toks []token, line int) error {
	if len(toks) < 2 || !toks[1].isOp("(") {
		return syntaxAt(toks, len(toks))
	}
	k := matchParen(toks, 1)
	if k < 0 {
		return syntaxError("(")
	}
	vals, err := r.evalArgs(toks[:k], 2)
	if err != nil {
		return err
	}
	if len(vals) < 3 {
		return syntaxAt(toks, k)
	}
	number := int32(ErrUserDefined)
	var msg string
	switch m := vals[0].(type) {
	case int64:
		number = int32(m)
		msg = fmt.Sprintf("Error %d, severity %v, state %v was raised.", m, vals[1], vals[2])
	default:
		str, _ := coerce(m, &Column{Kind: KindNVarChar})
		msg, _ = str.(string)
		msg = sqlSprintf(msg, vals[3:])
	}
	sev, _ := vals[1].(int64)
	state, _ := vals[2].(int64)
	if sev <= 10 {
		if err := r.sink.Info(number, msg); err != nil {
			return transport{err}
		}
		return nil
	}
	e := &SQLError{Number: number, Class: uint8(min(sev, 25)), State: uint8(state), Message: msg, Line: int32(line)}
	if r.tryDepth > 0 {
		return e
	}
	// RAISERROR does not end the batch.
	r.s.lastErr = number
	if err := r.sink.Error(e); err != nil {
		return transport{err}
	}
	return r.sinkDoneErr()
}

func (r *runner) sinkDoneErr() error {
	if err := r.sink.Done(Done{Error: true, Cmd: r.cmd}); err != nil {
		return transport{err}
	}
	return nil
}

// throw implements THROW [number, message, state].
func (r *runner) throw(toks []token) error {
	if len(toks) == 1 {
		if r.s.caught != nil {
			e := *r.s.caught
			return &e
		}
		return newErr(10704, 16, "To rethrow an error, a THROW statement must be used inside a CATCH block.")
	}
	vals, err := r.evalArgs(toks, 1)
	if err != nil {
		return err
	}
	if len(vals) != 3 {
		return syntaxAt(toks, len(toks))
	}
	num, _ := vals[0].(int64)
	msgV, _ := coerce(vals[1], &Column{Kind: KindNVarChar})
	msg, _ := msgV.(string)
	state, _ := vals[2].(int64)
	return &SQLError{Number: int32(num), Class: 16, State: uint8(state), Message: msg}
}

// evalArgs evaluates the comma-separated expressions toks[from:]; a missing
// one (",,", a leading or trailing ',') is a syntax error at that comma.
func (r *runner) evalArgs(toks []token, from int) ([]any, error) {
	if from > len(toks) {
		from = len(toks)
	}
	var vals []any
	for _, rg := range splitTopLevel(toks[from:]) {
		lo, hi := rg[0]+from, rg[1]+from
		if lo >= hi {
			return nil, syntaxAt(toks, lo)
		}
		v, err := r.eval(toks[lo:hi])
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
	}
	return vals, nil
}

// sqlSprintf substitutes %s, %d, %i, %u in a RAISERROR message.
func sqlSprintf(format string, args []any) string {
	var b strings.Builder
	ai := 0
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 >= len(format) {
			b.WriteByte(c)
			continue
		}
		j := i + 1
		for j < len(format) && strings.IndexByte("-+ #0123456789.", format[j]) >= 0 {
			j++
		}
		if j < len(format) && (format[j] == 'h' || format[j] == 'l') {
			j++
		}
		if j >= len(format) {
			b.WriteString(format[i:])
			break
		}
		switch format[j] {
		case 's', 'd', 'i', 'u', 'x', 'X', 'o':
			if ai < len(args) {
				v, _ := coerce(args[ai], &Column{Kind: KindNVarChar})
				if v == nil {
					v = "(null)"
				}
				fmt.Fprint(&b, v)
				ai++
			}
			i = j
		case '%':
			b.WriteByte('%')
			i = j
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// errorLine is the line to report for an error in st: the statement's first
// line, or for a syntax error the line of the offending token.
func errorLine(st *stmt, se *SQLError) int32 {
	if se.Number == ErrSyntax {
		if near, ok := strings.CutPrefix(se.Message, "Incorrect syntax near '"); ok {
			near = strings.TrimSuffix(near, "'.")
			for _, t := range st.toks {
				if strings.EqualFold(t.source(), near) {
					return int32(t.line)
				}
			}
		}
	}
	return int32(st.line)
}

// placeSyntaxError words a syntax error SQLite found in a statement the way
// SQL Server would: SQLite names a token of the translated SQL ("LIMIT" for
// TOP, "@sv1" for a variable, "||" for '+'), or none for incomplete input.
// When that token is not one the client wrote, the error is placed at the
// statement's last token, which is where a truncated statement (the usual
// case) went wrong.
func placeSyntaxError(st *stmt, se *SQLError) {
	if se.Number != ErrSyntax || len(st.toks) == 0 {
		return
	}
	near, ok := strings.CutPrefix(se.Message, "Incorrect syntax near '")
	if ok {
		near = strings.TrimSuffix(near, "'.")
		if len(near) >= 2 && (near[0] == '\'' || near[0] == '"') && near[len(near)-1] == near[0] {
			near = near[1 : len(near)-1]
		}
		for _, t := range st.toks {
			if strings.EqualFold(t.source(), near) {
				return
			}
		}
	}
	last := st.toks[len(st.toks)-1]
	*se = *syntaxError(last.source())
	se.Line = int32(last.line)
}
