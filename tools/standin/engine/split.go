package engine

// This file splits a T-SQL batch into statements. T-SQL does not require
// semicolons, so a statement also ends where the next one visibly begins: at
// a statement-starting keyword outside strings, brackets, parentheses and
// CASE ... END, unless that keyword continues the current statement
// (INSERT ... SELECT, UNION SELECT, UPDATE ... SET, WITH cte AS (...) SELECT,
// ON DELETE CASCADE, DROP TABLE IF EXISTS, ...).

// stmtKind is the shape of a parsed statement.
type stmtKind uint8

const (
	skSimple stmtKind = iota // one statement in toks
	skIf                     // IF cond body [ELSE els]
	skWhile                  // WHILE cond body
	skBlock                  // BEGIN ... END
	skTry                    // BEGIN TRY body END TRY BEGIN CATCH els END CATCH
)

// stmt is one parsed statement of a batch.
type stmt struct {
	kind stmtKind
	line int
	toks []token // skSimple: the statement; skIf/skWhile: the condition
	body []*stmt
	els  []*stmt
}

// head returns the upper-cased first keyword of a simple statement.
func (s *stmt) head() string {
	if len(s.toks) == 0 {
		return ""
	}
	return s.toks[0].up
}

var stmtStarters = map[string]bool{
	"SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true,
	"BEGIN": true, "COMMIT": true, "ROLLBACK": true, "SAVE": true,
	"SET": true, "USE": true, "WAITFOR": true, "CREATE": true, "DROP": true,
	"ALTER": true, "TRUNCATE": true, "IF": true, "WHILE": true,
	"DECLARE": true, "PRINT": true, "EXEC": true, "EXECUTE": true,
	"WITH": true, "RAISERROR": true, "THROW": true, "RETURN": true,
	"MERGE": true, "GO": true, "BREAK": true, "CONTINUE": true,
}

var ifObjectWords = map[string]bool{
	"TABLE": true, "VIEW": true, "INDEX": true, "PROCEDURE": true, "PROC": true,
	"FUNCTION": true, "TRIGGER": true, "SCHEMA": true, "DATABASE": true,
	"SEQUENCE": true, "TYPE": true,
}

type parser struct {
	toks []token
	pos  int
}

// syntaxErr is a parse failure reported as error 102.
type syntaxErr struct {
	line int
	near string
}

func (p *parser) peek(off int) token {
	if p.pos+off < len(p.toks) {
		return p.toks[p.pos+off]
	}
	return token{kind: tkOp, text: ""}
}

// errAt is a syntax error at the token off ahead, or at the last token
// when the batch ends before it.
func (p *parser) errAt(off int) *syntaxErr {
	i := min(p.pos+off, len(p.toks)-1)
	if i < 0 {
		return &syntaxErr{line: 1}
	}
	t := p.toks[i]
	return &syntaxErr{line: t.line, near: t.source()}
}

func (p *parser) eof() bool { return p.pos >= len(p.toks) }

// parseBatch splits the whole batch.
func parseBatch(toks []token) ([]*stmt, *syntaxErr) {
	p := &parser{toks: toks}
	list, err := p.parseList(func(t token) bool { return false })
	if err != nil {
		return nil, err
	}
	if !p.eof() {
		t := p.peek(0)
		return nil, &syntaxErr{line: t.line, near: t.source()}
	}
	return list, nil
}

// parseList parses statements until stop(next token) or EOF.
func (p *parser) parseList(stop func(token) bool) ([]*stmt, *syntaxErr) {
	var out []*stmt
	for {
		for p.peek(0).isOp(";") {
			p.pos++
		}
		if p.eof() || stop(p.peek(0)) {
			return out, nil
		}
		s, err := p.parseStmt()
		if err != nil {
			return nil, err
		}
		if s != nil {
			out = append(out, s)
		}
	}
}

func (p *parser) parseStmt() (*stmt, *syntaxErr) {
	t := p.peek(0)
	switch {
	case t.is("IF") || t.is("WHILE"):
		p.pos++
		cond := p.collect(true)
		if len(cond) == 0 {
			return nil, p.errAt(0)
		}
		s := &stmt{kind: skIf, line: t.line, toks: cond}
		if t.is("WHILE") {
			s.kind = skWhile
		}
		body, err := p.parseBody()
		if err != nil {
			return nil, err
		}
		s.body = body
		if s.kind == skIf {
			// Allow a stray ';' before ELSE.
			save := p.pos
			for p.peek(0).isOp(";") {
				p.pos++
			}
			if p.peek(0).is("ELSE") {
				p.pos++
				els, err := p.parseBody()
				if err != nil {
					return nil, err
				}
				s.els = els
			} else {
				p.pos = save
			}
		}
		return s, nil
	case t.is("BEGIN") && p.peek(1).is("TRY"):
		p.pos += 2
		body, err := p.parseList(func(x token) bool { return x.is("END") })
		if err != nil {
			return nil, err
		}
		if !p.peek(0).is("END") || !p.peek(1).is("TRY") {
			return nil, p.errAt(0)
		}
		p.pos += 2
		for p.peek(0).isOp(";") {
			p.pos++
		}
		if !p.peek(0).is("BEGIN") || !p.peek(1).is("CATCH") {
			return nil, p.errAt(0)
		}
		p.pos += 2
		els, err := p.parseList(func(x token) bool { return x.is("END") })
		if err != nil {
			return nil, err
		}
		if !p.peek(0).is("END") || !p.peek(1).is("CATCH") {
			return nil, p.errAt(0)
		}
		p.pos += 2
		return &stmt{kind: skTry, line: t.line, body: body, els: els}, nil
	case t.is("BEGIN") && !isTranWord(p.peek(1)):
		p.pos++
		body, err := p.parseList(func(x token) bool { return x.is("END") })
		if err != nil {
			return nil, err
		}
		if !p.peek(0).is("END") {
			return nil, p.errAt(0)
		}
		p.pos++
		return &stmt{kind: skBlock, line: t.line, body: body}, nil
	case t.is("END") || t.is("ELSE"):
		return nil, &syntaxErr{line: t.line, near: t.source()}
	}
	toks := p.collect(false)
	if len(toks) == 0 {
		p.pos++ // should not happen; avoid looping forever
		return nil, &syntaxErr{line: t.line, near: t.source()}
	}
	return &stmt{kind: skSimple, line: toks[0].line, toks: toks}, nil
}

func isTranWord(t token) bool {
	return t.is("TRAN") || t.is("TRANSACTION") || t.is("DISTRIBUTED") || t.is("WORK")
}

// parseBody parses the single statement (or BEGIN...END block) after IF,
// ELSE or WHILE.
func (p *parser) parseBody() ([]*stmt, *syntaxErr) {
	for p.peek(0).isOp(";") {
		p.pos++
	}
	if p.eof() || p.peek(0).is("END") || p.peek(0).is("ELSE") {
		return nil, p.errAt(0)
	}
	s, err := p.parseStmt()
	if err != nil {
		return nil, err
	}
	return []*stmt{s}, nil
}

// collect gathers the tokens of one simple statement (or of an IF/WHILE
// condition when cond is true) and advances past them.
func (p *parser) collect(cond bool) []token {
	start := p.pos
	depth, caseDepth := 0, 0
	var head string
	if !cond && !p.eof() {
		head = p.peek(0).up
	}
	sawValues, sawSelect, sawSet, withMain := false, false, false, false
	for i := p.pos; i < len(p.toks); i++ {
		t := p.toks[i]
		if t.kind == tkOp {
			switch t.text {
			case "(":
				depth++
			case ")":
				if depth > 0 {
					depth--
				}
			case ";":
				if depth == 0 {
					p.pos = i
					return p.toks[start:i]
				}
			}
			continue
		}
		if t.kind != tkWord || depth > 0 {
			continue
		}
		switch t.up {
		case "CASE":
			caseDepth++
			continue
		case "END":
			if caseDepth > 0 {
				caseDepth--
				continue
			}
			if i > start {
				p.pos = i
				return p.toks[start:i]
			}
			continue
		case "ELSE":
			if caseDepth > 0 {
				continue
			}
			if i > start {
				p.pos = i
				return p.toks[start:i]
			}
			continue
		case "VALUES":
			sawValues = true
		}
		if i == start || caseDepth > 0 || !stmtStarters[t.up] {
			continue
		}
		var prev token
		if i > start {
			prev = p.toks[i-1]
		}
		var next, next2 token
		if i+1 < len(p.toks) {
			next = p.toks[i+1]
		}
		if i+2 < len(p.toks) {
			next2 = p.toks[i+2]
		}
		if cond && t.up != "BEGIN" && t.up != "WITH" {
			// Any statement keyword ends an IF/WHILE condition.
			p.pos = i
			return p.toks[start:i]
		}
		cont := false
		switch t.up {
		case "SELECT":
			switch {
			case prev.is("UNION") || prev.is("ALL") || prev.is("EXCEPT") || prev.is("INTERSECT") || prev.is("AS") || prev.is("FOR"):
				cont = true
			case head == "INSERT" && !sawValues && !sawSelect:
				cont, sawSelect = true, true
			case head == "WITH" && !withMain:
				cont, withMain, head = true, true, "SELECT"
			}
		case "INSERT", "UPDATE", "DELETE":
			switch {
			case head == "WITH" && !withMain:
				cont, withMain, head = true, true, t.up
			case prev.is("ON") || prev.is("THEN") || prev.is("FOR") || prev.is("AFTER") || prev.isOp(",") || prev.is("OF"):
				cont = true
			case head == "MERGE" || head == "CREATE" || head == "GRANT":
				cont = true
			}
		case "SET":
			switch {
			case head == "UPDATE" && !sawSet:
				cont, sawSet = true, true
			case prev.is("DELETE") || prev.is("UPDATE") || head == "MERGE":
				cont = true
			}
		case "WITH":
			// A CTE is "WITH name AS (" or "WITH name (cols) AS ("; anything
			// else (table hints, WITH TIES, WITH CHECK) continues.
			if cond {
				cont = true
				break
			}
			cont = !(next.isIdent() && !next.is("TIES") && (next2.is("AS") || next2.isOp("(")))
		case "DROP", "ALTER", "CREATE":
			cont = head == "ALTER"
		case "IF":
			cont = ifObjectWords[prev.up] && prev.kind == tkWord
		case "EXEC", "EXECUTE":
			cont = head == "INSERT"
		case "BEGIN":
			if cond {
				p.pos = i
				return p.toks[start:i]
			}
		}
		if !cont {
			p.pos = i
			return p.toks[start:i]
		}
	}
	p.pos = len(p.toks)
	return p.toks[start:]
}
