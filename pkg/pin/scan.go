package pin

import "strings"

// Batch is what ScanBatch reads from one SQLBatch.
type Batch struct {
	// Pins is the state that must pin the session to its backend,
	// deduplicated, in first-seen order.
	Pins []Reason
	// Replay is the SET statements on the replay allow-list, normalised
	// ("SET NOCOUNT ON", "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
	// option names and keywords upper case, values as written), in order.
	// Each element is one complete statement; the caller records them
	// (MergeReplay) only once the batch has completed without error, and
	// replays them after RESETCONNECTION on a borrowed connection.
	Replay []string
	// BeginsTran and EndsTran are hints only (BEGIN TRAN, COMMIT, ROLLBACK
	// seen at statement level): ENVCHANGE 8/9/10/17 from the server is the
	// authority.
	BeginsTran, EndsTran bool
}

// MaxDynamicDepth bounds how deep ScanBatch follows EXEC('...') and
// sp_executesql N'...' text nested in each other; deeper text pins Unknown.
const MaxDynamicDepth = 4

// ScanBatch reads SQLBatch text. It never panics and runs in time linear
// in len(sql) (times at most MaxDynamicDepth+1 for nested dynamic SQL).
func ScanBatch(sql string) Batch {
	p := scanText(sql, 0)
	return p.res
}

// ScanDynamic returns the pins that text run as dynamic SQL (EXEC('...'),
// the statement of sp_executesql, e.g. the first parameter of an
// sp_executesql RPC) leaves on the session. SET options, USE and #local
// temp tables end with the dynamic batch, so they do not pin; cursors,
// app locks, ##global temp tables, CONTEXT_INFO, session context, prepared
// handles and anything unreadable still do.
func ScanDynamic(sql string) []Reason {
	p := scanText(sql, 0)
	return p.dynamicPins()
}

type parser struct {
	src     string
	lx      lexer
	ring    [8]token
	head, n int
	level   int
	res     Batch

	alter      bool   // an ALTER statement is open (until ';'): its SET is not a session SET
	jumped     bool   // RETURN, GOTO, BREAK, CONTINUE or THROW seen: later statements may not run
	globalTemp bool   // a ##global temp object was named
	caseDepth  int    // open CASE expressions at statement level: their ELSE and END are not control flow
	blockDepth int    // open BEGIN ... END blocks (including TRY/CATCH)
	lastStmt   string // the last statement keyword seen at statement level
}

func scanText(sql string, level int) *parser {
	p := &parser{src: sql, lx: lexer{src: sql}, level: level}
	p.run()
	return p
}

// replay records an allow-listed SET, unless it may not have run: the
// statement governed by IF, ELSE or WHILE, inside a BEGIN ... END block
// (TRY/CATCH included), or after a RETURN/GOTO/BREAK/CONTINUE/THROW.
// Replaying such a SET could give the session a state it never had, so it
// pins instead.
func (p *parser) replay(stmt string) {
	switch {
	case p.jumped, p.blockDepth > 0, p.lastStmt == "IF", p.lastStmt == "ELSE", p.lastStmt == "WHILE":
		p.pin(SetOption)
	default:
		p.res.Replay = append(p.res.Replay, stmt)
	}
}

// stmtKeywords start statements. The last one seen at statement level
// tells whether a SET is governed by IF, ELSE or WHILE.
var stmtKeywords = map[string]bool{
	"SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true, "MERGE": true,
	"SET": true, "DECLARE": true, "EXEC": true, "EXECUTE": true, "IF": true,
	"ELSE": true, "WHILE": true, "BEGIN": true, "END": true, "COMMIT": true,
	"ROLLBACK": true, "SAVE": true, "PRINT": true, "RAISERROR": true, "THROW": true,
	"RETURN": true, "USE": true, "CREATE": true, "ALTER": true, "DROP": true,
	"TRUNCATE": true, "WITH": true, "OPEN": true, "FETCH": true, "CLOSE": true,
	"DEALLOCATE": true, "GRANT": true, "REVOKE": true, "DENY": true, "WAITFOR": true,
	"BREAK": true, "CONTINUE": true, "GOTO": true, "DBCC": true, "BULK": true,
	"KILL": true, "CHECKPOINT": true, "SETUSER": true, "REVERT": true,
	"RECONFIGURE": true, "BACKUP": true, "RESTORE": true, "READTEXT": true,
	"WRITETEXT": true, "UPDATETEXT": true,
}

func (p *parser) dynamicPins() []Reason {
	var out []Reason
	for _, r := range p.res.Pins {
		switch r {
		case SetOption, UseDatabase, Language:
			continue
		case TempTable:
			if !p.globalTemp {
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func (p *parser) peek(k int) token {
	for p.n <= k {
		p.ring[(p.head+p.n)%len(p.ring)] = p.lx.next()
		p.n++
	}
	return p.ring[(p.head+k)%len(p.ring)]
}

func (p *parser) next() token {
	t := p.peek(0)
	p.head = (p.head + 1) % len(p.ring)
	p.n--
	return t
}

func (p *parser) pin(r Reason) {
	for _, x := range p.res.Pins {
		if x == r {
			return
		}
	}
	p.res.Pins = append(p.res.Pins, r)
}

func (p *parser) raw(t token) string { return p.src[t.start:t.end] }

func (p *parser) isPunct(t token, c byte) bool {
	return t.kind == tPunct && p.src[t.start] == c
}

// word returns t upper-cased if it is an unquoted word short enough to be
// a keyword, else "".
func (p *parser) word(t token) string {
	if t.kind != tWord || t.end-t.start > 32 {
		return ""
	}
	return strings.ToUpper(p.raw(t))
}

func (p *parser) isVar(t token) bool {
	return t.kind == tWord && p.src[t.start] == '@'
}

func (p *parser) run() {
	first := true
	prev := ""       // the previous token, upper-cased if a word
	intro := ""      // the word before the current dotted name
	prevDot := false // the previous token was '.'
	for {
		t := p.next()
		before := prev
		prev = p.word(t)
		switch t.kind {
		case tEOF:
			return
		case tErr:
			p.pin(Unknown)
			return
		case tWord, tQuoted:
			if !prevDot {
				intro = before
			}
			// A temporary table is created by CREATE TABLE #t and
			// SELECT ... INTO #t (INSERT INTO #t and DROP TABLE #t pin
			// too, harmlessly). Merely naming one does not pin: if it
			// exists, this session created it and is pinned already; if
			// not, the statement fails (208) and leaves nothing behind.
			if n := name(p.src, t); strings.HasPrefix(n, "#") && (intro == "INTO" || intro == "TABLE") {
				p.pin(TempTable)
				if strings.HasPrefix(n, "##") {
					p.globalTemp = true
				}
			}
		}
		prevDot = p.isPunct(t, '.')
		if p.isPunct(t, ';') {
			p.alter = false
			continue
		}
		wasFirst := first
		first = false
		if t.depth > 0 || (t.kind != tWord && t.kind != tQuoted) {
			continue
		}
		w := p.word(t)
		// lastStmt is updated after the switch: set() reads the keyword
		// before this SET. DROP TABLE IF EXISTS and CASE ... ELSE ... END
		// are not statements.
		isStmt := p.caseDepth == 0 && stmtKeywords[w] && !(w == "IF" && dropObject[before])
		switch w {
		case "SET":
			p.set()
		case "USE":
			p.pin(UseDatabase)
		case "DECLARE":
			// DECLARE name ... without @ declares a cursor.
			if n := p.peek(0); (n.kind == tWord && !p.isVar(n)) || n.kind == tQuoted {
				p.pin(Cursor)
			}
		case "OPEN":
			if w := p.word(p.peek(0)); w == "SYMMETRIC" || w == "MASTER" {
				p.pin(SymmetricKey)
			} else {
				p.pin(Cursor)
			}
		case "EXEC", "EXECUTE":
			p.exec()
		case "SETUSER", "REVERT":
			p.pin(ExecuteAs)
		case "BEGIN":
			switch p.word(p.peek(0)) {
			case "TRAN", "TRANSACTION":
				p.res.BeginsTran = true
			case "DISTRIBUTED":
				p.pin(DistributedTran)
				p.res.BeginsTran = true
			case "DIALOG", "CONVERSATION":
			default: // a block, BEGIN TRY or BEGIN CATCH
				p.blockDepth++
			}
		case "COMMIT", "ROLLBACK":
			p.res.EndsTran = true
		case "CASE":
			p.caseDepth++
		case "END":
			switch {
			case p.caseDepth > 0:
				p.caseDepth--
			case p.blockDepth > 0 && p.word(p.peek(0)) != "CONVERSATION":
				p.blockDepth--
			}
		case "RETURN", "GOTO", "BREAK", "CONTINUE", "THROW":
			p.jumped = true
		case "INSERT":
			if p.word(p.peek(0)) == "BULK" {
				p.pin(BulkLoad)
			}
		case "DBCC":
			if p.word(p.peek(0)) == "TRACEON" {
				p.pin(SetOption)
			}
		case "ALTER", "CREATE":
			if p.word(t) == "ALTER" {
				p.alter = true
			}
			if p.module() {
				return
			}
		default:
			if wasFirst {
				// A batch may start with a procedure call without EXEC.
				p.procCall(t)
			}
		}
		if isStmt {
			p.lastStmt = w
		}
	}
}

// dropObject are the words after which IF starts DROP ... IF EXISTS.
var dropObject = map[string]bool{
	"TABLE": true, "VIEW": true, "PROC": true, "PROCEDURE": true, "FUNCTION": true,
	"TRIGGER": true, "INDEX": true, "SCHEMA": true, "TYPE": true, "SEQUENCE": true,
	"SYNONYM": true, "DEFAULT": true, "RULE": true, "USER": true, "ROLE": true,
	"DATABASE": true, "ASSEMBLY": true, "COLUMN": true, "CONSTRAINT": true,
}

// module handles CREATE/ALTER [OR ALTER] PROCEDURE|FUNCTION|TRIGGER|VIEW:
// the rest of the batch is a body that does not run now, so scanning stops
// (true). Only the object's name matters: #name is a temporary procedure.
func (p *parser) module() bool {
	k := 0
	if p.word(p.peek(0)) == "OR" && p.word(p.peek(1)) == "ALTER" {
		k = 2
	}
	switch p.word(p.peek(k)) {
	case "PROC", "PROCEDURE", "FUNCTION", "TRIGGER", "VIEW":
	default:
		return false
	}
	for i := k + 1; i < k+6; i++ {
		t := p.peek(i)
		if t.kind == tErr {
			p.pin(Unknown)
			return true
		}
		if t.kind != tWord && t.kind != tQuoted && !p.isPunct(t, '.') {
			break
		}
		if strings.HasPrefix(name(p.src, t), "#") {
			p.pin(TempTable)
		}
	}
	return true
}

// exec reads what follows EXEC / EXECUTE.
func (p *parser) exec() {
	t := p.peek(0)
	switch {
	case p.word(t) == "AS":
		p.pin(ExecuteAs)
		return
	case p.isPunct(t, '('):
		p.next()
		var sb strings.Builder
		ok := true
		for {
			x := p.next()
			if x.kind == tEOF || x.kind == tErr {
				p.pin(Unknown)
				return
			}
			if p.isPunct(x, ')') && x.depth == t.depth {
				break
			}
			switch {
			case x.kind == tString:
				sb.WriteString(stringValue(p.src, x))
			case p.isPunct(x, '+'):
			default:
				ok = false // a variable or expression: text unknown
			}
		}
		if !ok {
			p.pin(Unknown)
			return
		}
		p.dynamic(sb.String())
		return
	case p.isVar(t):
		if p.isPunct(p.peek(1), '=') { // EXEC @rc = proc
			p.next()
			p.next()
			t = p.peek(0)
			if p.isVar(t) {
				p.pin(Unknown)
				return
			}
		} else { // EXEC @procname: the procedure is unknown
			p.pin(Unknown)
			return
		}
	}
	if t.kind != tWord && t.kind != tQuoted {
		p.pin(Unknown)
		return
	}
	p.procCall(p.next())
}

// procCall reads a possibly qualified procedure name whose first part is t
// and pins by its last part.
func (p *parser) procCall(t token) {
	last := name(p.src, t)
	for p.isPunct(p.peek(0), '.') {
		p.next()
		if n := p.peek(0); (n.kind == tWord && !p.isVar(n)) || n.kind == tQuoted {
			last = name(p.src, p.next())
		}
	}
	last = strings.ToLower(last)
	if r, ok := procReasons[last]; ok {
		p.pin(r)
		return
	}
	if last == "sp_executesql" {
		a := p.peek(0)
		if p.isVar(a) && p.isPunct(p.peek(1), '=') {
			a = p.peek(2)
		}
		if a.kind != tString {
			p.pin(Unknown)
			return
		}
		p.dynamic(stringValue(p.src, a))
	}
}

func (p *parser) dynamic(sql string) {
	if p.level >= MaxDynamicDepth {
		p.pin(Unknown)
		return
	}
	sub := scanText(sql, p.level+1)
	for _, r := range sub.dynamicPins() {
		p.pin(r)
	}
	if sub.globalTemp {
		p.globalTemp = true
	}
	p.res.BeginsTran = p.res.BeginsTran || sub.res.BeginsTran
	p.res.EndsTran = p.res.EndsTran || sub.res.EndsTran
}

// assignAt reports whether the token at k starts an assignment ("=",
// "+=" and the other compound operators) or a member access ("."): the
// shape of UPDATE ... SET col = ..., never of a session SET option.
func (p *parser) assignAt(k int) bool {
	t := p.peek(k)
	if t.kind != tPunct {
		return false
	}
	switch p.src[t.start] {
	case '=', '.':
		return true
	case '+', '-', '*', '/', '%', '&', '^', '|':
		n := p.peek(k + 1)
		return p.isPunct(n, '=') && n.start == t.end
	}
	return false
}

// set reads what follows a statement-level SET.
func (p *parser) set() {
	t := p.peek(0)
	switch {
	case p.isVar(t): // SET @x = ...: a variable, no session state
		return
	case t.kind == tWord || t.kind == tQuoted:
		if p.assignAt(1) { // UPDATE/MERGE ... SET col = ...
			return
		}
		if t.kind == tQuoted {
			p.pin(Unknown)
			return
		}
	case p.isPunct(t, '(') && p.alter: // ALTER TABLE/INDEX ... SET (...)
		return
	default:
		p.pin(Unknown)
		return
	}
	up := p.word(t)
	if up == "NULL" || up == "DEFAULT" { // ON DELETE|UPDATE SET NULL|DEFAULT
		return
	}
	if p.alter { // ALTER DATABASE ... SET opt: conservative, never replayed
		p.pin(SetOption)
		return
	}
	k, ok := setOptions[up]
	if !ok {
		p.pin(Unknown)
		return
	}
	p.next()
	switch k {
	case optBool:
		opts := []string{up}
		for p.isPunct(p.peek(0), ',') {
			p.next()
			o := p.word(p.next())
			if setOptions[o] != optBool {
				p.pin(Unknown)
				return
			}
			opts = append(opts, o)
		}
		v := p.word(p.next())
		if v != "ON" && v != "OFF" {
			p.pin(Unknown)
			return
		}
		for _, o := range opts {
			a, ok := replayBool[o]
			if ok && ((v == "ON" && a.on) || (v == "OFF" && a.off)) {
				p.replay("SET " + o + " " + v)
			} else {
				p.pin(SetOption)
			}
		}
	case optValue:
		p.setValue(up)
	case optTran:
		if p.word(p.next()) != "ISOLATION" || p.word(p.next()) != "LEVEL" {
			p.pin(Unknown)
			return
		}
		var level string
		switch w := p.word(p.next()); w {
		case "READ":
			switch w2 := p.word(p.next()); w2 {
			case "UNCOMMITTED", "COMMITTED":
				level = "READ " + w2
			}
		case "REPEATABLE":
			if p.word(p.next()) == "READ" {
				level = "REPEATABLE READ"
			}
		case "SNAPSHOT", "SERIALIZABLE":
			level = w
		}
		if level == "" {
			p.pin(Unknown)
			return
		}
		p.replay("SET TRANSACTION ISOLATION LEVEL " + level)
	case optCtx:
		p.pin(ContextInfo)
	case optOther:
		p.pin(SetOption)
	}
}

// setValue reads the value of DATEFIRST, DATEFORMAT, LANGUAGE,
// LOCK_TIMEOUT or TEXTSIZE.
func (p *parser) setValue(opt string) {
	v := p.next()
	numeric := opt != "DATEFORMAT" && opt != "LANGUAGE"
	var val string
	switch {
	case p.isVar(v):
		if opt == "LANGUAGE" {
			p.pin(Language)
		} else {
			p.pin(SetOption)
		}
		return
	case numeric && p.isPunct(v, '-') && p.peek(0).kind == tNumber:
		val = "-" + p.raw(p.next())
	case numeric && v.kind == tNumber:
		val = p.raw(v)
	case !numeric && (v.kind == tWord || v.kind == tQuoted || v.kind == tString):
		val = p.raw(v)
	default:
		p.pin(Unknown)
		return
	}
	p.replay("SET " + opt + " " + val)
}

// procReasons maps system procedures (lower case, unqualified) to the pin
// their call causes.
var procReasons = map[string]Reason{
	"sp_cursor": Cursor, "sp_cursoropen": Cursor, "sp_cursorprepare": Cursor,
	"sp_cursorexecute": Cursor, "sp_cursorprepexec": Cursor, "sp_cursorunprepare": Cursor,
	"sp_cursorfetch": Cursor, "sp_cursoroption": Cursor, "sp_cursorclose": Cursor,
	"sp_prepare": Prepared, "sp_execute": Prepared, "sp_prepexec": Prepared,
	"sp_prepexecrpc": Prepared, "sp_unprepare": Prepared,
	"sp_setapprole": AppRole, "sp_unsetapprole": AppRole,
	"sp_set_session_context": SessionContext,
	"sp_getapplock":          AppLock, "sp_releaseapplock": AppLock,
	"sp_bindsession": DistributedTran, "sp_getbindtoken": DistributedTran,
}

// ScanRPC returns the pins an RPC request causes. name is the procedure
// name as sent (possibly qualified or bracketed); when it is empty, procID
// is the well-known ProcID of MS-TDS 2.2.6.6: 1..9 sp_cursor* (Cursor),
// 10 sp_executesql (no pin; scan its statement with ScanDynamic), 11
// sp_prepare, 12 sp_execute, 13 sp_prepexec, 14 sp_prepexecrpc, 15
// sp_unprepare (Prepared); any other ProcID is Unknown. Calls to other
// named procedures do not pin (see the package doc).
func ScanRPC(name string, procID uint16) []Reason {
	if name == "" {
		switch {
		case procID >= 1 && procID <= 9:
			return []Reason{Cursor}
		case procID == 10:
			return nil
		case procID >= 11 && procID <= 15:
			return []Reason{Prepared}
		}
		return []Reason{Unknown}
	}
	if r, ok := procReasons[rpcName(name)]; ok {
		return []Reason{r}
	}
	return nil
}

// rpcName is the unqualified, unquoted, lower-case procedure name of an
// RPC name such as "[master].[sys].[sp_PrepExec]" or "sp_prepare;1".
func rpcName(n string) string {
	n = strings.TrimSpace(n)
	if i := strings.LastIndexByte(n, ';'); i >= 0 && !strings.ContainsAny(n[i:], "]\"") {
		n = n[:i]
	}
	p := parser{src: n, lx: lexer{src: n}}
	last := ""
	for {
		t := p.next()
		if t.kind == tEOF || t.kind == tErr {
			break
		}
		if t.kind == tWord || t.kind == tQuoted {
			last = name(n, t)
		}
	}
	return strings.ToLower(strings.TrimSpace(last))
}
