package engine

import (
	"fmt"
	"strconv"
	"strings"
)

// identitySpec is an IDENTITY column found in CREATE TABLE.
type identitySpec struct {
	col       string
	seed, inc int64
}

// createTable is a translated CREATE TABLE.
type createTable struct {
	name     string
	temp     bool
	sql      string
	identity *identitySpec
}

var charTypes = map[string]bool{
	"NVARCHAR": true, "VARCHAR": true, "NCHAR": true, "CHAR": true, "NTEXT": true,
	"TEXT": true, "SYSNAME": true, "CHARACTER": true,
}

// translateCreateTable rewrites CREATE TABLE name (...) for SQLite. The
// declared SQL Server types are kept verbatim (SQLite reports them as the
// column decltype, which types.go maps back), (MAX) becomes (-1), IDENTITY is
// removed and emulated with a trigger (see identityTriggerSQL), character
// columns compare case-insensitively (COLLATE NOCASE, like SQL Server's
// default collation), and CLUSTERED / ON [PRIMARY] / WITH (...) options go.
func translateCreateTable(toks []token, tr *translator) (*createTable, *SQLError) {
	toks = stripNames(toks)
	// CREATE TABLE name (
	if len(toks) < 4 || !toks[2].isIdent() {
		return nil, syntaxAt(toks, 2)
	}
	ct := &createTable{name: toks[2].text}
	ct.temp = strings.HasPrefix(ct.name, "#")
	open := 3
	if !toks[open].isOp("(") {
		return nil, syntaxAt(toks, open)
	}
	closeIdx := matchParen(toks, open)
	if closeIdx < 0 {
		return nil, syntaxAt(toks, len(toks))
	}
	// One column definition or table constraint per top-level comma.
	var parts []string
	if closeIdx == open+1 {
		return nil, syntaxAt(toks, closeIdx)
	}
	for _, rg := range splitTopLevel(toks[open+1 : closeIdx]) {
		lo, hi := open+1+rg[0], open+1+rg[1]
		if lo >= hi { // at the ',' or ')' after the missing definition
			return nil, syntaxAt(toks, lo)
		}
		d := toks[lo:hi]
		s, id, err := translateColumnDef(d, tr)
		if err != nil {
			return nil, err
		}
		if id != nil {
			if ct.identity != nil {
				return nil, newErr(2744, 16, "Multiple identity columns specified for table '%s'. Only one identity column per table is allowed.", ct.name)
			}
			ct.identity = id
		}
		parts = append(parts, s)
	}
	kw := "CREATE TABLE "
	if ct.temp {
		kw = "CREATE TEMP TABLE "
	}
	ct.sql = kw + quoteIdent(ct.name) + " (" + strings.Join(parts, ", ") + ")"
	return ct, nil
}

// translateColumnDef translates one column definition or table constraint
// (d is not empty: callers report an empty one at its comma).
func translateColumnDef(d []token, tr *translator) (string, *identitySpec, *SQLError) {
	if len(d) == 0 {
		return "", nil, syntaxError("")
	}
	first := d[0]
	// Table constraint: [CONSTRAINT name] PRIMARY KEY / UNIQUE / FOREIGN KEY / CHECK.
	if first.is("CONSTRAINT") || first.is("PRIMARY") || first.is("UNIQUE") || first.is("FOREIGN") || first.is("CHECK") || first.is("INDEX") {
		if first.is("INDEX") {
			return "", nil, newErr(ErrFeatureNotPresent, 16, "Inline INDEX definitions are not supported by the stand-in.")
		}
		var out []token
		for i := 0; i < len(d); i++ {
			t := d[i]
			if t.is("CLUSTERED") || t.is("NONCLUSTERED") {
				continue
			}
			if t.is("WITH") && i+1 < len(d) && d[i+1].isOp("(") {
				k := matchParen(d, i+1)
				if k < 0 {
					return "", nil, syntaxAt(d, len(d))
				}
				i = k
				continue
			}
			if t.is("ON") && i+1 < len(d) && (d[i+1].is("PRIMARY") || d[i+1].kind == tkQIdent) && i > 0 && d[i-1].isOp(")") {
				i++
				continue
			}
			out = append(out, t)
		}
		rw, err := tr.rewrite(out)
		if err != nil {
			return "", nil, err
		}
		return render(rw), nil, nil
	}
	if !first.isIdent() {
		return "", nil, syntaxError(first.source())
	}
	col := first.text
	i := 1
	// Type name: one word, or the longest run of up to three that names a
	// type (DOUBLE PRECISION, NATIONAL CHARACTER VARYING).
	if i >= len(d) || !d[i].isIdent() || columnConstraintWords[d[i].up] {
		return "", nil, syntaxAt(d, i)
	}
	words := 1
	for k := 3; k >= 2; k-- {
		if i+k > len(d) {
			continue
		}
		name := ""
		ok := true
		for _, t := range d[i : i+k] {
			ok = ok && t.isIdent() && !columnConstraintWords[t.up]
			name += " " + t.text
		}
		if _, known := parseTypeName(name, 1); ok && known {
			words = k
			break
		}
	}
	var parts []string
	for _, t := range d[i : i+words] {
		parts = append(parts, strings.ToUpper(t.text))
	}
	typeName := strings.Join(parts, " ")
	i += words
	decl := typeName
	if i < len(d) && d[i].isOp("(") {
		k := matchParen(d, i)
		if k < 0 {
			return "", nil, syntaxError("(")
		}
		var args []string
		for _, t := range d[i+1 : k] {
			switch {
			case t.isOp(","):
			case t.is("MAX"):
				args = append(args, "-1")
			case t.kind == tkNumber:
				args = append(args, t.text)
			default:
				return "", nil, syntaxError(t.source())
			}
		}
		decl += "(" + strings.Join(args, ",") + ")"
		i = k + 1
	}
	if _, ok := parseTypeName(decl, 1); !ok {
		return "", nil, newErr(2715, 16, "Column, parameter, or variable #1: Cannot find data type %s.", typeName)
	}
	var id *identitySpec
	var rest []token
	hasCollate := false
	hasIdent := false
	for _, t := range d[i:] {
		if t.is("IDENTITY") {
			hasIdent = true
		}
	}
	for ; i < len(d); i++ {
		t := d[i]
		switch {
		case t.is("IDENTITY"):
			id = &identitySpec{col: col, seed: 1, inc: 1}
			if i+1 < len(d) && d[i+1].isOp("(") {
				k := matchParen(d, i+1)
				if k < 0 {
					return "", nil, syntaxError("(")
				}
				var nums []int64
				neg := false
				for _, a := range d[i+2 : k] {
					if a.isOp("-") {
						neg = true
						continue
					}
					if a.kind == tkNumber {
						n, _ := strconv.ParseInt(a.text, 10, 64)
						if neg {
							n = -n
						}
						nums = append(nums, n)
						neg = false
					}
				}
				if len(nums) >= 1 {
					id.seed = nums[0]
				}
				if len(nums) >= 2 && nums[1] != 0 {
					id.inc = nums[1]
				}
				i = k
			}
		case t.is("NOT") && i+1 < len(d) && d[i+1].is("NULL") && hasIdent:
			i++ // IDENTITY columns are filled after the insert (see the trigger)
		case t.is("CLUSTERED") || t.is("NONCLUSTERED") || t.is("ROWGUIDCOL") || t.is("SPARSE") || t.is("FILESTREAM"):
		case t.is("COLLATE") && i+1 < len(d):
			hasCollate = true
			coll := strings.ToUpper(d[i+1].text)
			if strings.Contains(coll, "_CS") || strings.HasSuffix(coll, "_BIN") || strings.HasSuffix(coll, "_BIN2") {
				rest = append(rest, t, token{kind: tkWord, text: "BINARY"})
			} else {
				rest = append(rest, t, token{kind: tkWord, text: "NOCASE"})
			}
			i++
		case t.is("DEFAULT"):
			// DEFAULT expr: SQLite wants a literal or a parenthesised expression.
			rest = append(rest, t)
			j := i + 1
			if j < len(d) && d[j].isOp("(") {
				k := matchParen(d, j)
				if k < 0 {
					return "", nil, syntaxError("(")
				}
				e, err := tr.rewrite(d[j : k+1])
				if err != nil {
					return "", nil, err
				}
				rest = append(rest, e...)
				i = k
			} else if j < len(d) {
				end := j + 1
				if d[j].isOp("-") && j+1 < len(d) {
					end = j + 2
				}
				if end < len(d) && d[end].isOp("(") { // DEFAULT GETDATE()
					k := matchParen(d, end)
					if k < 0 {
						return "", nil, syntaxAt(d, len(d))
					}
					end = k + 1
				}
				e, err := tr.rewrite(d[j:end])
				if err != nil {
					return "", nil, err
				}
				rest = append(rest, token{kind: tkOp, text: "("})
				rest = append(rest, e...)
				rest = append(rest, token{kind: tkOp, text: ")"})
				i = end - 1
			}
		case t.is("CONSTRAINT") && i+1 < len(d):
			// Named column constraint: keep the constraint, drop the name.
			i++
		default:
			rest = append(rest, t)
		}
	}
	s := quoteIdent(col) + " " + decl
	if !hasCollate && charTypes[typeName] {
		s += " COLLATE NOCASE"
	}
	if len(rest) > 0 {
		rw, err := tr.rewrite(rest)
		if err != nil {
			return "", nil, err
		}
		s += " " + render(rw)
	}
	return s, id, nil
}

var columnConstraintWords = map[string]bool{
	"IDENTITY": true, "NOT": true, "NULL": true, "PRIMARY": true, "UNIQUE": true,
	"DEFAULT": true, "CONSTRAINT": true, "CHECK": true, "REFERENCES": true,
	"COLLATE": true, "CLUSTERED": true, "NONCLUSTERED": true, "ROWGUIDCOL": true,
	"SPARSE": true, "FOREIGN": true, "GENERATED": true, "AS": true,
}

// identityTableSQL creates the table holding identity counters (one row per
// table with an IDENTITY column); schema is "main" or "temp".
func identityTableSQL(schema string) string {
	return "CREATE TABLE IF NOT EXISTS " + schema + ".__standin_identity (tbl TEXT PRIMARY KEY, col TEXT NOT NULL, seed INTEGER NOT NULL, inc INTEGER NOT NULL, last INTEGER NOT NULL)"
}

// identityTriggerSQL returns the statements that emulate IDENTITY for a new
// table: a counter row and an AFTER INSERT trigger that fills the column when
// the insert left it NULL (and bumps the counter past explicit values).
func identityTriggerSQL(ct *createTable) []string {
	id := ct.identity
	key := strings.ToLower(ct.name)
	schema, trig := "main", "CREATE TRIGGER "
	if ct.temp {
		schema, trig = "temp", "CREATE TEMP TRIGGER "
	}
	lit := token{kind: tkString, text: key}.render()
	bump := "last + inc"
	explicit := "max(last, NEW." + quoteIdent(id.col) + ")"
	if id.inc < 0 {
		explicit = "min(last, NEW." + quoteIdent(id.col) + ")"
	}
	return []string{
		identityTableSQL(schema),
		fmt.Sprintf("INSERT OR REPLACE INTO %s.__standin_identity (tbl, col, seed, inc, last) VALUES (%s, %s, %d, %d, %d)",
			schema, lit, token{kind: tkString, text: id.col}.render(), id.seed, id.inc, id.seed-id.inc),
		trig + quoteIdent("__standin_identity_"+ct.name) + " AFTER INSERT ON " + quoteIdent(ct.name) + " FOR EACH ROW BEGIN " +
			"UPDATE __standin_identity SET last = CASE WHEN NEW." + quoteIdent(id.col) + " IS NULL THEN " + bump + " ELSE " + explicit + " END WHERE tbl = " + lit + "; " +
			"UPDATE " + quoteIdent(ct.name) + " SET " + quoteIdent(id.col) + " = (SELECT last FROM __standin_identity WHERE tbl = " + lit + ") WHERE rowid = NEW.rowid AND NEW." + quoteIdent(id.col) + " IS NULL; END",
	}
}

// translateCreateIndex drops SQL Server-only options from CREATE INDEX.
func translateCreateIndex(toks []token, tr *translator) (string, *SQLError) {
	toks = stripNames(toks)
	var out []token
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.is("CLUSTERED") || t.is("NONCLUSTERED"):
			continue
		case (t.is("INCLUDE") || t.is("WITH")) && i+1 < len(toks) && toks[i+1].isOp("("):
			if k := matchParen(toks, i+1); k > 0 {
				i = k
				continue
			}
		case t.is("ON") && i > 0 && toks[i-1].isOp(")") && i+1 < len(toks):
			i++
			continue
		}
		out = append(out, t)
	}
	rw, err := tr.rewrite(out)
	if err != nil {
		return "", err
	}
	return render(rw), nil
}
