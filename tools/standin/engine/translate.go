package engine

import (
	"strconv"
	"strings"
)

// This file rewrites one T-SQL statement into SQLite SQL, token by token:
//
//   - [ident], #temp and "ident" become SQLite quoted identifiers; N'..' becomes '..';
//     0xAB becomes X'AB'; dbo. / db.dbo. / db.. / tempdb.. prefixes are dropped;
//   - @var and @@var become bound parameters (@__v1, ...), so variables,
//     sp_executesql parameters and session values (@@SPID, SCOPE_IDENTITY(),
//     DB_NAME(), ...) reach SQLite as values;
//   - SELECT TOP n / TOP (n) becomes LIMIT n; OFFSET .. FETCH becomes LIMIT/OFFSET;
//   - CONVERT(type, x) and CAST(x AS type) use SQLite storage types;
//     ISNULL, SUBSTRING, LOG, LEFT, RIGHT, CURRENT_TIMESTAMP, OBJECT_ID map to
//     SQLite equivalents or to functions registered in funcs.go;
//   - '+' next to a string operand becomes '||';
//   - table hints WITH (NOLOCK) are dropped.
//
// It also reads the outermost SELECT list to report SQL Server types for
// expression columns (CAST targets, @@SPID, SCOPE_IDENTITY(), GETDATE(), ...).

// colHint is what translation knows about one select-list item.
type colHint struct {
	col    *Column // nil: take the type from decltype or the value
	noName bool    // unaliased expression: SQL Server reports an empty name
	star   bool    // * or t.*
}

// sysParam names a session value bound as a parameter.
type sysParam struct {
	name string // SQLite parameter name without '@'
	key  string // what to bind: "@@SPID", "SCOPE_IDENTITY", "PROP:ProductVersion", "VAR:@X"
}

// translation is a statement ready for SQLite.
type translation struct {
	sql      string
	params   []sysParam
	hints    []colHint
	multiRow bool     // a FROM clause or UNION: more than one row possible
	assign   []string // SELECT @a = x, @b = y: the variables (upper-case) to assign
	into     string   // SELECT ... INTO name: the new table
}

// varTyper reports the declared type of a variable (upper-case name).
type varTyper interface {
	varColumn(name string) (Column, bool)
}

type translator struct {
	vt     varTyper
	params []sysParam
	byKey  map[string]string
}

func newTranslator(vt varTyper) *translator {
	return &translator{vt: vt, byKey: map[string]string{}}
}

// param returns the placeholder token for a session value or variable.
func (tr *translator) param(key string, line int) token {
	name, ok := tr.byKey[key]
	if !ok {
		name = "sv" + strconv.Itoa(len(tr.params)+1)
		tr.byKey[key] = name
		tr.params = append(tr.params, sysParam{name: name, key: key})
	}
	return token{kind: tkOp, text: "@" + name, line: line}
}

func render(toks []token) string {
	var b strings.Builder
	for i, t := range toks {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(t.render())
	}
	return b.String()
}

// matchParen returns the index of the ')' matching the '(' at i, or -1.
func matchParen(toks []token, i int) int {
	depth := 0
	for j := i; j < len(toks); j++ {
		if toks[j].isOp("(") {
			depth++
		} else if toks[j].isOp(")") {
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// stripNames removes schema/database prefixes and table hints.
func stripNames(toks []token) []token {
	out := make([]token, 0, len(toks))
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		// db.dbo.x, db..x, dbo.x
		if t.isIdent() && i+2 < len(toks) && toks[i+1].isOp(".") {
			if toks[i+2].isOp(".") && i+3 < len(toks) && toks[i+3].isIdent() {
				i += 2 // db..x -> x
				continue
			}
			if toks[i+2].isIdent() && strings.EqualFold(toks[i+2].text, "dbo") && i+4 < len(toks) && toks[i+3].isOp(".") && toks[i+4].isIdent() {
				i += 3 // db.dbo.x -> x
				continue
			}
			if strings.EqualFold(t.text, "dbo") && toks[i+2].isIdent() && (i == 0 || !toks[i-1].isOp(".")) {
				i++ // dbo.x -> x
				continue
			}
		}
		// WITH (NOLOCK) and friends.
		if t.is("WITH") && i+2 < len(toks) && toks[i+1].isOp("(") && tableHints[toks[i+2].up] {
			if j := matchParen(toks, i+1); j > 0 {
				i = j
				continue
			}
		}
		out = append(out, t)
	}
	return out
}

var tableHints = map[string]bool{
	"NOLOCK": true, "READUNCOMMITTED": true, "READCOMMITTED": true, "ROWLOCK": true,
	"UPDLOCK": true, "HOLDLOCK": true, "TABLOCK": true, "TABLOCKX": true, "PAGLOCK": true,
	"XLOCK": true, "READPAST": true, "SERIALIZABLE": true, "REPEATABLEREAD": true,
	"NOWAIT": true, "INDEX": true, "FORCESEEK": true, "SNAPSHOT": true,
}

// sysVarColumns maps @@variables to their SQL Server types.
var sysVarColumns = map[string]Column{
	"@@SPID":             {Kind: KindSmallInt},
	"@@TRANCOUNT":        {Kind: KindInt},
	"@@ROWCOUNT":         {Kind: KindInt},
	"@@ERROR":            {Kind: KindInt},
	"@@IDENTITY":         {Kind: KindDecimal, Precision: 38, Nullable: true},
	"@@SERVERNAME":       {Kind: KindNVarChar, Size: 128, Nullable: true},
	"@@SERVICENAME":      {Kind: KindNVarChar, Size: 128, Nullable: true},
	"@@VERSION":          {Kind: KindNVarChar, Size: 300, Nullable: true},
	"@@LANGUAGE":         {Kind: KindNVarChar, Size: 128, Nullable: true},
	"@@TEXTSIZE":         {Kind: KindInt},
	"@@MAX_PRECISION":    {Kind: KindTinyInt},
	"@@OPTIONS":          {Kind: KindInt},
	"@@DATEFIRST":        {Kind: KindTinyInt},
	"@@LOCK_TIMEOUT":     {Kind: KindInt},
	"@@MICROSOFTVERSION": {Kind: KindInt},
	"@@NESTLEVEL":        {Kind: KindInt},
	"@@MAX_CONNECTIONS":  {Kind: KindInt},
	"@@PROCID":           {Kind: KindInt},
	"@@FETCH_STATUS":     {Kind: KindInt},
	"@@DBTS":             {Kind: KindVarBinary, Size: 8},
	"@@LANGID":           {Kind: KindSmallInt},
}

// sessionFuncs are niladic functions whose value comes from the session.
var sessionFuncs = map[string]string{
	"SCOPE_IDENTITY": "SCOPE_IDENTITY", "DB_NAME": "DB_NAME", "SUSER_NAME": "LOGIN",
	"SUSER_SNAME": "LOGIN", "USER_NAME": "USER", "ORIGINAL_LOGIN": "LOGIN",
	"HOST_NAME": "HOST", "APP_NAME": "APP", "DB_ID": "DB_ID", "XACT_STATE": "XACT_STATE",
	"ERROR_MESSAGE": "ERROR_MESSAGE", "ERROR_NUMBER": "ERROR_NUMBER",
	"ERROR_SEVERITY": "ERROR_SEVERITY", "ERROR_STATE": "ERROR_STATE",
	"ERROR_LINE": "ERROR_LINE", "ERROR_PROCEDURE": "ERROR_PROCEDURE", "@@PROCID": "@@PROCID",
	"SESSION_ID": "@@SPID",
}

// niladic keywords (no parentheses) with session values.
var sessionWords = map[string]string{
	"SYSTEM_USER": "LOGIN", "CURRENT_USER": "USER", "SESSION_USER": "USER",
}

// funcColumns are the SQL Server result types of known functions.
var funcColumns = map[string]Column{
	"SCOPE_IDENTITY":  {Kind: KindDecimal, Precision: 38, Nullable: true},
	"IDENT_CURRENT":   {Kind: KindDecimal, Precision: 38, Nullable: true},
	"GETDATE":         {Kind: KindDateTime},
	"GETUTCDATE":      {Kind: KindDateTime},
	"SYSDATETIME":     {Kind: KindDateTime2, Scale: 7},
	"SYSUTCDATETIME":  {Kind: KindDateTime2, Scale: 7},
	"DATEADD":         {Kind: KindDateTime, Nullable: true},
	"NEWID":           {Kind: KindUniqueIdentifier, Size: 16},
	"COUNT":           {Kind: KindInt},
	"COUNT_BIG":       {Kind: KindBigInt},
	"DB_NAME":         {Kind: KindNVarChar, Size: 128, Nullable: true},
	"SUSER_NAME":      {Kind: KindNVarChar, Size: 128, Nullable: true},
	"SUSER_SNAME":     {Kind: KindNVarChar, Size: 128, Nullable: true},
	"USER_NAME":       {Kind: KindNVarChar, Size: 128, Nullable: true},
	"ORIGINAL_LOGIN":  {Kind: KindNVarChar, Size: 128, Nullable: true},
	"HOST_NAME":       {Kind: KindNVarChar, Size: 128, Nullable: true},
	"APP_NAME":        {Kind: KindNVarChar, Size: 128, Nullable: true},
	"SYSTEM_USER":     {Kind: KindNVarChar, Size: 128, Nullable: true},
	"CURRENT_USER":    {Kind: KindNVarChar, Size: 128, Nullable: true},
	"SESSION_USER":    {Kind: KindNVarChar, Size: 128, Nullable: true},
	"SERVERPROPERTY":  {Kind: KindNVarChar, Size: 128, Nullable: true},
	"ERROR_MESSAGE":   {Kind: KindNVarChar, Size: 4000, Nullable: true},
	"ERROR_PROCEDURE": {Kind: KindNVarChar, Size: 128, Nullable: true},
	"ERROR_NUMBER":    {Kind: KindInt, Nullable: true},
	"ERROR_SEVERITY":  {Kind: KindInt, Nullable: true},
	"ERROR_STATE":     {Kind: KindInt, Nullable: true},
	"ERROR_LINE":      {Kind: KindInt, Nullable: true},
	"XACT_STATE":      {Kind: KindSmallInt},
	"DB_ID":           {Kind: KindSmallInt, Nullable: true},
	"OBJECT_ID":       {Kind: KindInt, Nullable: true},
	"LEN":             {Kind: KindInt, Nullable: true},
	"DATALENGTH":      {Kind: KindInt, Nullable: true},
	"CHARINDEX":       {Kind: KindInt, Nullable: true},
	"DATEDIFF":        {Kind: KindInt, Nullable: true},
	"DATEPART":        {Kind: KindInt, Nullable: true},
	"YEAR":            {Kind: KindInt, Nullable: true},
	"MONTH":           {Kind: KindInt, Nullable: true},
	"DAY":             {Kind: KindInt, Nullable: true},
	"ISNUMERIC":       {Kind: KindInt},
	"RAND":            {Kind: KindFloat},
}

// stringFuncs return character data (for '+' as concatenation).
var stringFuncs = map[string]bool{
	"UPPER": true, "LOWER": true, "LTRIM": true, "RTRIM": true, "TRIM": true,
	"SUBSTRING": true, "REPLACE": true, "LEFT": true, "RIGHT": true, "CONCAT": true,
	"DB_NAME": true, "SUSER_NAME": true, "SUSER_SNAME": true, "USER_NAME": true,
	"NEWID": true, "FORMAT": true, "STR": true, "REPLICATE": true, "SPACE": true,
	"REVERSE": true, "CONCAT_WS": true, "STRING_AGG": true, "QUOTENAME": true,
	"ERROR_MESSAGE": true, "HOST_NAME": true, "APP_NAME": true, "CHAR": true, "NCHAR": true,
}

// selectListEnd words end a select list at depth 0.
var selectListEnd = map[string]bool{
	"FROM": true, "INTO": true, "WHERE": true, "GROUP": true, "HAVING": true,
	"ORDER": true, "UNION": true, "EXCEPT": true, "INTERSECT": true, "OPTION": true,
	"FOR": true,
}

// selectItems locates the select list of the SELECT at toks[sel]: the index
// after SELECT/DISTINCT/TOP, the items as [start,end) ranges, and the index
// where the list ends.
func selectItems(toks []token, sel int) (first int, items [][2]int, end int) {
	i := sel + 1
	if i < len(toks) && (toks[i].is("DISTINCT") || toks[i].is("ALL")) {
		i++
	}
	if i < len(toks) && toks[i].is("TOP") {
		i++
		if i < len(toks) && toks[i].isOp("(") {
			if j := matchParen(toks, i); j > 0 {
				i = j + 1
			}
		} else {
			i++
		}
		if i < len(toks) && toks[i].is("PERCENT") {
			i++
		}
		if i+1 < len(toks) && toks[i].is("WITH") && toks[i+1].is("TIES") {
			i += 2
		}
	}
	i = min(i, len(toks)) // "SELECT TOP" at the end: no items
	first = i
	depth, caseDepth := 0, 0
	start := i
	for ; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.isOp("("):
			depth++
		case t.isOp(")"):
			depth--
			if depth < 0 {
				items = append(items, [2]int{start, i})
				return first, items, i
			}
		case depth == 0 && t.is("CASE"):
			caseDepth++
		case depth == 0 && t.is("END") && caseDepth > 0:
			caseDepth--
		case depth == 0 && caseDepth == 0 && t.isOp(","):
			items = append(items, [2]int{start, i})
			start = i + 1
		case depth == 0 && caseDepth == 0 && t.kind == tkWord && selectListEnd[t.up]:
			items = append(items, [2]int{start, i})
			return first, items, i
		}
	}
	if start < len(toks) {
		items = append(items, [2]int{start, len(toks)})
	}
	return first, items, len(toks)
}

// splitAlias separates "expr AS alias", "expr alias" and "alias = expr".
func splitAlias(item []token) (expr []token, alias string, hasAlias bool) {
	n := len(item)
	if n >= 3 && item[0].isIdent() && item[1].isOp("=") {
		return item[2:], item[0].text, true
	}
	if n >= 3 && item[0].kind == tkString && item[1].isOp("=") {
		return item[2:], item[0].text, true
	}
	if n >= 3 && item[n-2].is("AS") && (item[n-1].isIdent() || item[n-1].kind == tkString) {
		return item[:n-2], item[n-1].text, true
	}
	if n >= 2 && (item[n-1].kind == tkQIdent || item[n-1].kind == tkWord && !reservedAfterExpr[item[n-1].up]) {
		p := item[n-2]
		if !p.isOp(".") && !p.is("CASE") && (p.kind != tkOp || p.isOp(")")) && !(p.kind == tkWord && reservedAfterExpr[p.up]) {
			return item[:n-1], item[n-1].text, true
		}
	}
	return item, "", false
}

var reservedAfterExpr = map[string]bool{
	"END": true, "NULL": true, "AND": true, "OR": true, "NOT": true, "IS": true,
	"ELSE": true, "THEN": true, "WHEN": true, "CASE": true, "DISTINCT": true,
	"CURRENT_TIMESTAMP": true, "SYSTEM_USER": true, "CURRENT_USER": true, "SESSION_USER": true,
	"ASC": true, "DESC": true, "LIKE": true, "IN": true, "BETWEEN": true, "EXISTS": true,
}

// hintFor infers the SQL Server type of one select-list expression.
func (tr *translator) hintFor(expr []token) *Column {
	if len(expr) == 0 {
		return nil
	}
	t := expr[0]
	if len(expr) == 1 {
		switch t.kind {
		case tkVar:
			if c, ok := tr.vt.varColumn(t.up); ok {
				return &c
			}
		case tkSysVar:
			if c, ok := sysVarColumns[t.up]; ok {
				return &c
			}
		case tkWord:
			if c, ok := funcColumns[t.up]; ok && (t.up == "SYSTEM_USER" || t.up == "CURRENT_USER" || t.up == "SESSION_USER") {
				return &c
			}
			if t.up == "CURRENT_TIMESTAMP" {
				c := Column{Kind: KindDateTime}
				return &c
			}
		}
		return nil
	}
	if t.kind != tkWord || !expr[1].isOp("(") || matchParen(expr, 1) != len(expr)-1 {
		return nil
	}
	inner := expr[2 : len(expr)-1]
	switch t.up {
	case "CAST", "TRY_CAST":
		if as := lastTopLevel(inner, "AS"); as >= 0 {
			if c, ok := parseTypeName(typeText(inner[as+1:]), 30); ok {
				return &c
			}
		}
		return nil
	case "CONVERT", "TRY_CONVERT":
		comma := firstTopLevelComma(inner)
		if comma > 0 {
			if c, ok := parseTypeName(typeText(inner[:comma]), 30); ok {
				return &c
			}
		}
		return nil
	case "ISNULL", "COALESCE":
		comma := firstTopLevelComma(inner)
		if comma > 0 {
			return tr.hintFor(inner[:comma])
		}
	}
	if c, ok := funcColumns[t.up]; ok {
		return &c
	}
	return nil
}

func lastTopLevel(toks []token, word string) int {
	depth, at := 0, -1
	for i, t := range toks {
		switch {
		case t.isOp("("):
			depth++
		case t.isOp(")"):
			depth--
		case depth == 0 && t.is(word):
			at = i
		}
	}
	return at
}

func firstTopLevelComma(toks []token) int {
	depth := 0
	for i, t := range toks {
		switch {
		case t.isOp("("):
			depth++
		case t.isOp(")"):
			depth--
		case depth == 0 && t.isOp(","):
			return i
		}
	}
	return -1
}

// typeText renders type tokens as "NVARCHAR(50)".
func typeText(toks []token) string {
	var b strings.Builder
	for i, t := range toks {
		if i > 0 && t.isIdent() && toks[i-1].isIdent() {
			b.WriteByte(' ')
		}
		b.WriteString(t.text)
	}
	return b.String()
}

// translateQuery translates a statement that may return rows (SELECT / WITH),
// computing column hints from its outermost select list.
func (tr *translator) translateQuery(toks []token) (*translation, *SQLError) {
	toks = stripNames(toks)
	tx := &translation{}
	sel := -1
	depth := 0
	for i, t := range toks {
		if t.isOp("(") {
			depth++
		} else if t.isOp(")") {
			depth--
		} else if depth == 0 && t.is("SELECT") {
			sel = i
			break
		}
	}
	depth = 0
	for i, t := range toks {
		if t.isOp("(") {
			depth++
		} else if t.isOp(")") {
			depth--
		} else if depth == 0 && i > sel && sel >= 0 && (t.is("FROM") || t.is("UNION") || t.is("EXCEPT") || t.is("INTERSECT")) {
			tx.multiRow = true
		}
	}
	if sel >= 0 {
		first, items, end := selectItems(toks, sel)
		var rebuilt []token
		rebuilt = append(rebuilt, toks[:first]...)
		allAssign := len(items) > 0
		for k, r := range items {
			item := toks[r[0]:r[1]]
			if len(item) == 0 {
				return nil, syntaxError(",")
			}
			if len(item) >= 3 && item[0].kind == tkVar && item[1].isOp("=") {
				tx.assign = append(tx.assign, item[0].up)
			} else {
				allAssign = false
			}
			expr, alias, hasAlias := splitAlias(item)
			h := colHint{}
			if len(expr) == 1 && expr[0].isOp("*") || len(expr) >= 3 && expr[len(expr)-1].isOp("*") && expr[len(expr)-2].isOp(".") {
				h.star = true
			} else {
				h.col = tr.hintFor(expr)
				isColRef := len(expr) == 1 && expr[0].isIdent() && !reservedAfterExpr[expr[0].up] && funcColumns[expr[0].up].Kind == 0 && sessionWords[expr[0].up] == "" ||
					len(expr) == 3 && expr[0].isIdent() && expr[1].isOp(".") && expr[2].isIdent()
				h.noName = !hasAlias && !isColRef
			}
			tx.hints = append(tx.hints, h)
			if k > 0 {
				rebuilt = append(rebuilt, token{kind: tkOp, text: ",", line: item[0].line})
			}
			switch {
			case len(item) >= 3 && item[0].kind == tkVar && item[1].isOp("="):
				rebuilt = append(rebuilt, item[2:]...)
			case hasAlias && len(item) >= 3 && item[1].isOp("="):
				rebuilt = append(rebuilt, expr...)
				rebuilt = append(rebuilt, token{kind: tkWord, text: "AS", up: "AS"}, token{kind: tkQIdent, text: alias})
			default:
				rebuilt = append(rebuilt, item...)
			}
		}
		if len(tx.assign) > 0 && !allAssign {
			return nil, newErr(141, 15, "A SELECT statement that assigns a value to a variable must not be combined with data-retrieval operations.")
		}
		rest := toks[end:]
		if len(rest) >= 2 && rest[0].is("INTO") && rest[1].isIdent() {
			tx.into = rest[1].text
			rest = rest[2:]
		}
		rebuilt = append(rebuilt, rest...)
		toks = rebuilt
	}
	out, err := tr.rewrite(toks)
	if err != nil {
		return nil, err
	}
	tx.sql = render(out)
	tx.params = tr.params
	return tx, nil
}

// translateStmt translates a statement that returns no rows.
func (tr *translator) translateStmt(toks []token) (*translation, *SQLError) {
	out, err := tr.rewrite(stripNames(toks))
	if err != nil {
		return nil, err
	}
	return &translation{sql: render(out), params: tr.params}, nil
}

// translateExpr translates a scalar expression (for SELECT <expr>).
func (tr *translator) translateExpr(toks []token) (string, *SQLError) {
	out, err := tr.rewrite(stripNames(toks))
	if err != nil {
		return "", err
	}
	return render(out), nil
}

// rewrite applies the token-level T-SQL -> SQLite rewrites.
func (tr *translator) rewrite(toks []token) ([]token, *SQLError) {
	out := make([]token, 0, len(toks)+4)
	// limits[i] = LIMIT text to insert before closing position; computed
	// as we go: a stack of pending TOP clauses per paren depth.
	type pendingTop struct {
		depth int
		limit []token
	}
	var tops []pendingTop
	depth := 0
	flushTops := func(d int) {
		for len(tops) > 0 && tops[len(tops)-1].depth == d {
			p := tops[len(tops)-1]
			tops = tops[:len(tops)-1]
			out = append(out, token{kind: tkWord, text: "LIMIT", up: "LIMIT"})
			out = append(out, p.limit...)
		}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		next := token{}
		if i+1 < len(toks) {
			next = toks[i+1]
		}
		switch t.kind {
		case tkVar:
			if _, ok := tr.vt.varColumn(t.up); !ok {
				return nil, newErr(ErrMustDeclare, 15, "Must declare the scalar variable \"%s\".", t.text)
			}
			out = append(out, tr.param("VAR:"+t.up, t.line))
			continue
		case tkSysVar:
			if _, ok := sysVarColumns[t.up]; !ok {
				return nil, newErr(ErrMustDeclare, 15, "Must declare the scalar variable \"%s\".", t.text)
			}
			out = append(out, tr.param(t.up, t.line))
			continue
		case tkOp:
			switch t.text {
			case "(":
				depth++
			case ")":
				flushTops(depth)
				depth--
			case "+":
				if tr.isConcat(toks, out, i) {
					t = token{kind: tkOp, text: "||", line: t.line}
				}
			case "/":
				if next.kind == tkNumber && isZeroNumber(next.text) {
					return nil, newErr(ErrDivideByZero, 16, "Divide by zero error encountered.")
				}
			case "?":
				// Not T-SQL, and SQLite would take it for a parameter.
				return nil, syntaxAt(toks, i)
			case "!<":
				t.text = ">="
			case "!>":
				t.text = "<="
			}
			out = append(out, t)
			continue
		case tkWord:
		default:
			out = append(out, t)
			continue
		}
		// Words.
		call := next.isOp("(")
		switch {
		case t.up == "SELECT":
			out = append(out, t)
			j := i + 1
			if j < len(toks) && (toks[j].is("DISTINCT") || toks[j].is("ALL")) {
				out = append(out, toks[j])
				j++
			}
			if j < len(toks) && toks[j].is("TOP") {
				j++
				var limit []token
				if j < len(toks) && toks[j].isOp("(") {
					k := matchParen(toks, j)
					if k < 0 {
						return nil, syntaxAt(toks, len(toks))
					}
					inner, err := tr.sub(toks[j+1 : k])
					if err != nil {
						return nil, err
					}
					limit = append([]token{{kind: tkOp, text: "("}}, append(inner, token{kind: tkOp, text: ")"})...)
					j = k + 1
				} else if j < len(toks) && !toks[j].isOp(")") && !toks[j].isOp(",") {
					inner, err := tr.sub(toks[j : j+1])
					if err != nil {
						return nil, err
					}
					limit = inner
					j++
				} else {
					return nil, syntaxAt(toks, j) // TOP without a count
				}
				if j < len(toks) && toks[j].is("PERCENT") {
					j++ // approximated as a row count
				}
				if j+1 < len(toks) && toks[j].is("WITH") && toks[j+1].is("TIES") {
					j += 2
				}
				tops = append(tops, pendingTop{depth: depth, limit: limit})
			}
			i = j - 1
			continue
		case t.up == "OFFSET" && i > 0:
			// OFFSET n ROWS [FETCH NEXT m ROWS ONLY]
			j := i + 1
			k := j
			for k < len(toks) && !toks[k].is("ROWS") && !toks[k].is("ROW") {
				k++
			}
			if k >= len(toks) {
				break
			}
			off, err := tr.sub(toks[j:k])
			if err != nil {
				return nil, err
			}
			k++
			limit := []token{{kind: tkNumber, text: "-1"}}
			if k+1 < len(toks) && toks[k].is("FETCH") {
				m := k + 2
				e := m
				for e < len(toks) && !toks[e].is("ROWS") && !toks[e].is("ROW") {
					e++
				}
				lim, err := tr.sub(toks[m:e])
				if err != nil {
					return nil, err
				}
				limit = lim
				k = e + 1
				if k < len(toks) && toks[k].is("ONLY") {
					k++
				}
			}
			out = append(out, token{kind: tkWord, text: "LIMIT", up: "LIMIT"})
			out = append(out, limit...)
			out = append(out, token{kind: tkWord, text: "OFFSET", up: "OFFSET"})
			out = append(out, off...)
			i = k - 1
			continue
		case t.up == "ISNULL" && call:
			t.text = "IFNULL"
		case t.up == "SUBSTRING" && call:
			t.text = "substr"
		case t.up == "LOG" && call:
			t.text = "ln"
		case t.up == "CEILING" && call:
			t.text = "ceil"
		case t.up == "LEFT" && call:
			t.text = "standin_left"
		case t.up == "RIGHT" && call:
			t.text = "standin_right"
		case t.up == "COUNT_BIG" && call:
			t.text = "COUNT"
		case t.up == "STRING_AGG" && call:
			t.text = "group_concat"
		case t.up == "CURRENT_TIMESTAMP":
			out = append(out, token{kind: tkWord, text: "getdate", up: "GETDATE"}, token{kind: tkOp, text: "("}, token{kind: tkOp, text: ")"})
			continue
		case sessionWords[t.up] != "" && !call:
			out = append(out, tr.param(sessionWords[t.up], t.line))
			continue
		case call && (t.up == "DATEADD" || t.up == "DATEDIFF" || t.up == "DATEPART" || t.up == "DATENAME" || t.up == "DATEDIFF_BIG") && i+2 < len(toks) && toks[i+2].kind == tkWord:
			if t.up == "DATENAME" || t.up == "DATEDIFF_BIG" {
				t.text = strings.TrimSuffix(strings.Replace(strings.ToLower(t.up), "name", "part", 1), "_big")
			}
			out = append(out, t, next, token{kind: tkString, text: strings.ToLower(toks[i+2].text)})
			i += 2
			continue
		case call && (t.up == "CAST" || t.up == "TRY_CAST" || t.up == "CONVERT" || t.up == "TRY_CONVERT"):
			k := matchParen(toks, i+1)
			if k < 0 {
				return nil, syntaxAt(toks, len(toks))
			}
			// CAST(expr AS type) / CONVERT(type, expr[, style]) as index
			// ranges of toks, so syntax errors name the right token.
			lo := i + 2
			var exprLo, exprHi, typeLo, typeHi int
			if t.up == "CAST" || t.up == "TRY_CAST" {
				as := lastTopLevel(toks[lo:k], "AS")
				if as < 0 {
					return nil, syntaxAt(toks, k)
				}
				exprLo, exprHi, typeLo, typeHi = lo, lo+as, lo+as+1, k
			} else {
				comma := firstTopLevelComma(toks[lo:k])
				if comma < 0 {
					return nil, syntaxAt(toks, k)
				}
				typeLo, typeHi, exprLo, exprHi = lo, lo+comma, lo+comma+1, k
				if c2 := firstTopLevelComma(toks[exprLo:k]); c2 >= 0 {
					exprHi = exprLo + c2 // style is ignored
					if exprHi+1 >= k {
						return nil, syntaxAt(toks, k)
					}
				}
			}
			if exprLo >= exprHi {
				return nil, syntaxAt(toks, exprHi)
			}
			if serr := checkTypeSyntax(toks, typeLo, typeHi); serr != nil {
				return nil, serr
			}
			exprToks, typeToks := toks[exprLo:exprHi], toks[typeLo:typeHi]
			c, ok := parseTypeName(typeText(typeToks), 30)
			if !ok {
				return nil, newErr(243, 16, "Type %s is not a defined system type.", typeText(typeToks))
			}
			e, err := tr.sub(exprToks)
			if err != nil {
				return nil, err
			}
			out = append(out, token{kind: tkWord, text: "CAST", up: "CAST"}, token{kind: tkOp, text: "("})
			out = append(out, e...)
			out = append(out, token{kind: tkWord, text: "AS", up: "AS"}, token{kind: tkWord, text: sqliteCastType(c)}, token{kind: tkOp, text: ")"})
			i = k
			continue
		case call && t.up == "OBJECT_ID":
			k := matchParen(toks, i+1)
			if k < 0 {
				return nil, syntaxAt(toks, len(toks))
			}
			args, serr := callArgs(toks, i+2, k)
			if serr != nil {
				return nil, serr
			}
			if len(args) < 1 || len(args) > 2 {
				return nil, argCountErr(t, "1 to 2 arguments")
			}
			inner := toks[args[0][0]:args[0][1]]
			var nameExpr string
			temp := false
			if len(inner) == 1 && inner[0].kind == tkString {
				base := objectBaseName(inner[0].text)
				temp = strings.HasPrefix(base, "#")
				nameExpr = token{kind: tkString, text: base}.render()
			} else {
				e, err := tr.sub(inner)
				if err != nil {
					return nil, err
				}
				nameExpr = "standin_objname(" + render(e) + ")"
			}
			q := "(SELECT rowid FROM main.sqlite_schema WHERE type IN ('table','view') AND name = " + nameExpr + " COLLATE NOCASE" +
				" UNION ALL SELECT -rowid FROM temp.sqlite_schema WHERE type IN ('table','view') AND name = " + nameExpr + " COLLATE NOCASE LIMIT 1)"
			if temp {
				q = "(SELECT -rowid FROM temp.sqlite_schema WHERE type IN ('table','view') AND name = " + nameExpr + " COLLATE NOCASE LIMIT 1)"
			}
			out = append(out, token{kind: tkOp, text: q, line: t.line})
			i = k
			continue
		case call && t.up == "SERVERPROPERTY":
			k := matchParen(toks, i+1)
			if k == i+3 && toks[i+2].kind == tkString {
				out = append(out, tr.param("PROP:"+strings.ToUpper(toks[i+2].text), t.line))
				i = k
				continue
			}
			if k < 0 {
				return nil, syntaxAt(toks, len(toks))
			}
			if args, serr := callArgs(toks, i+2, k); serr != nil {
				return nil, serr
			} else if len(args) != 1 {
				return nil, argCountErr(t, "1 argument(s)")
			}
			return nil, newErr(ErrFeatureNotPresent, 16, "The stand-in supports SERVERPROPERTY only with a literal property name.")
		case call && sessionFuncs[t.up] != "" && i+2 < len(toks) && toks[i+2].isOp(")"):
			out = append(out, tr.param(sessionFuncs[t.up], t.line))
			i += 2
			continue
		case call && t.up == "IDENT_CURRENT":
			k := matchParen(toks, i+1)
			if k == i+3 && toks[i+2].kind == tkString {
				q := "(SELECT last FROM __standin_identity WHERE tbl = lower(" + token{kind: tkString, text: objectBaseName(toks[i+2].text)}.render() + "))"
				out = append(out, token{kind: tkOp, text: q, line: t.line})
				i = k
				continue
			}
			if k < 0 {
				return nil, syntaxAt(toks, len(toks))
			}
			if args, serr := callArgs(toks, i+2, k); serr != nil {
				return nil, serr
			} else if len(args) != 1 {
				return nil, argCountErr(t, "1 argument(s)")
			}
			return nil, newErr(ErrFeatureNotPresent, 16, "The stand-in supports IDENT_CURRENT only with a literal table name.")
		case t.up == "WITH" && next.is("TIES"):
			i++
			continue
		}
		out = append(out, t)
	}
	flushTops(0)
	return out, nil
}

// checkTypeSyntax checks that toks[lo:hi] is shaped like a type name:
// words (DOUBLE PRECISION), then optionally (n), (n, m) or (MAX). An
// unknown name is the caller's error 243 / 2715; a malformed one is 102 at
// the offending token.
func checkTypeSyntax(toks []token, lo, hi int) *SQLError {
	i := lo
	for i < hi && toks[i].isIdent() {
		i++
	}
	if i == lo {
		return syntaxAt(toks, lo)
	}
	if i > lo+1 {
		if _, ok := parseTypeName(typeText(toks[lo:i]), 1); !ok {
			return syntaxAt(toks, lo+1) // "INT x", not DOUBLE PRECISION
		}
	}
	if i < hi && toks[i].isOp("(") {
		i++
		for n := 0; ; n++ {
			if i >= hi || n == 2 || !(toks[i].kind == tkNumber || toks[i].is("MAX")) {
				return syntaxAt(toks, i)
			}
			i++
			if i < hi && toks[i].isOp(",") {
				i++
				continue
			}
			if i < hi && toks[i].isOp(")") {
				i++
				break
			}
			return syntaxAt(toks, i)
		}
	}
	if i < hi {
		return syntaxAt(toks, i)
	}
	return nil
}

// callArgs splits the arguments toks[lo:hi] of a call at top-level commas
// into index ranges of toks; a missing argument is a syntax error.
func callArgs(toks []token, lo, hi int) ([][2]int, *SQLError) {
	args := splitTopLevel(toks[lo:hi])
	for k := range args {
		args[k][0] += lo
		args[k][1] += lo
		if args[k][0] >= args[k][1] {
			return nil, syntaxAt(toks, args[k][0])
		}
	}
	return args, nil
}

// argCountErr is error 174 for a built-in called with the wrong number of
// arguments.
func argCountErr(fn token, want string) *SQLError {
	e := newErr(174, 15, "The %s function requires %s.", strings.ToLower(fn.text), want)
	e.Line = int32(fn.line)
	return e
}

// sub rewrites a nested token range with the same translator.
func (tr *translator) sub(toks []token) ([]token, *SQLError) { return tr.rewrite(toks) }

func isZeroNumber(s string) bool {
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && f == 0
}

// isConcat decides whether the '+' at toks[i] joins strings. out holds the
// tokens already emitted (its last entries are the left operand).
func (tr *translator) isConcat(toks []token, out []token, i int) bool {
	if i == 0 || len(out) == 0 {
		return false
	}
	prev := toks[i-1]
	if prev.kind == tkOp && !prev.isOp(")") {
		return false // unary plus
	}
	// Left operand: walk back over a parenthesised group and its function name.
	l := i - 1
	if prev.isOp(")") {
		depth := 0
		for ; l >= 0; l-- {
			if toks[l].isOp(")") {
				depth++
			} else if toks[l].isOp("(") {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		if l > 0 && toks[l-1].kind == tkWord {
			l--
		}
	} else if l >= 2 && toks[l-1].isOp(".") {
		l -= 2
	}
	if l < 0 {
		l = 0
	}
	if tr.stringy(toks[l:i]) {
		return true
	}
	// Chain: the operator before the left operand was itself a concatenation.
	if l > 0 && toks[l-1].isOp("+") {
		// find that '+' in out: it is the token before the left operand's output.
		for k := len(out) - 1; k >= 0; k-- {
			if out[k].isOp("||") || out[k].isOp("+") {
				if out[k].isOp("||") {
					return true
				}
				break
			}
		}
	}
	// Right operand.
	if i+1 < len(toks) {
		r := i + 1
		e := r + 1
		if toks[r].kind == tkWord && r+1 < len(toks) && toks[r+1].isOp("(") {
			if m := matchParen(toks, r+1); m > 0 {
				e = m + 1
			}
		} else if toks[r].isOp("(") {
			if m := matchParen(toks, r); m > 0 {
				e = m + 1
			}
		}
		if tr.stringy(toks[r:e]) {
			return true
		}
	}
	return false
}

// stringy reports whether an operand is known to be character data.
func (tr *translator) stringy(op []token) bool {
	if len(op) == 0 {
		return false
	}
	t := op[0]
	switch t.kind {
	case tkString:
		return true
	case tkVar:
		if c, ok := tr.vt.varColumn(t.up); ok {
			return c.Kind == KindNVarChar || c.Kind == KindVarChar || c.Kind == KindUniqueIdentifier
		}
	case tkSysVar:
		c := sysVarColumns[t.up]
		return c.Kind == KindNVarChar
	case tkWord:
		if len(op) > 1 && op[1].isOp("(") {
			if stringFuncs[t.up] {
				return true
			}
			if h := tr.hintFor(op); h != nil {
				return h.Kind == KindNVarChar || h.Kind == KindVarChar
			}
		}
		if sessionWords[t.up] != "" {
			return true
		}
	case tkOp:
		if t.isOp("(") && len(op) > 2 {
			return tr.stringy(op[1 : len(op)-1])
		}
	}
	return false
}
