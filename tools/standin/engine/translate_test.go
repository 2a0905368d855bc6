package engine

import (
	"strings"
	"testing"
)

type noVars map[string]Column

func (m noVars) varColumn(n string) (Column, bool) { c, ok := m[n]; return c, ok }

func TestTranslate(t *testing.T) {
	vars := noVars{"@S": {Kind: KindNVarChar, Size: 10}, "@N": {Kind: KindInt}}
	cases := []struct{ in, want string }{
		{"SELECT TOP 5 * FROM test_table ORDER BY id DESC", "SELECT * FROM test_table ORDER BY id DESC LIMIT 5"},
		{"SELECT TOP (@n) a FROM t", "SELECT a FROM t LIMIT ( @sv1 )"},
		{"SELECT a FROM t WHERE id IN (SELECT TOP 1 id FROM u)", "SELECT a FROM t WHERE id IN ( SELECT id FROM u LIMIT 1 )"},
		{"SELECT [name], N'ü' FROM [dbo].[t]", `SELECT "name" , 'ü' FROM "t"`},
		{"SELECT * FROM tenant_db.dbo.t WITH (NOLOCK)", "SELECT * FROM t"},
		{"SELECT * FROM tempdb..#t", `SELECT * FROM "#t"`},
		{"SELECT ISNULL(a, 0), LEN(b), SUBSTRING(b, 1, 2) FROM t", "SELECT IFNULL ( a , 0 ) , LEN ( b ) , substr ( b , 1 , 2 ) FROM t"},
		{"SELECT CONVERT(INT, '5')", "SELECT CAST ( '5' AS INTEGER )"},
		{"SELECT CAST(x AS NVARCHAR(MAX)) FROM t", "SELECT CAST ( x AS TEXT ) FROM t"},
		{"SELECT 'a' + b + c FROM t", "SELECT 'a' || b || c FROM t"},
		{"SELECT a + b FROM t", "SELECT a + b FROM t"},
		{"SELECT @s + 'x'", "SELECT @sv1 || 'x'"},
		{"SELECT a FROM t ORDER BY a OFFSET 10 ROWS FETCH NEXT 5 ROWS ONLY", "SELECT a FROM t ORDER BY a LIMIT 5 OFFSET 10"},
		{"SELECT DATEADD(day, 1, GETDATE())", "SELECT DATEADD ( 'day' , 1 , GETDATE ( ) )"},
		{"SELECT CURRENT_TIMESTAMP", "SELECT getdate ( )"},
		{"SELECT 0xABCD", "SELECT X'ABCD'"},
		{"SELECT x = 1", `SELECT 1 AS "x"`},
	}
	for _, c := range cases {
		toks, lerr := lex(c.in)
		if lerr != nil {
			t.Fatal(lerr)
		}
		tx, err := newTranslator(vars).translateQuery(toks)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if tx.sql != c.want {
			t.Errorf("%q:\n got %s\nwant %s", c.in, tx.sql, c.want)
		}
	}
}

func TestTranslateUndeclared(t *testing.T) {
	toks, _ := lex("SELECT @nope")
	_, err := newTranslator(noVars{}).translateQuery(toks)
	if err == nil || err.Number != ErrMustDeclare || !strings.Contains(err.Message, "@nope") {
		t.Fatalf("err = %v, want 137", err)
	}
}

func TestParseTypeName(t *testing.T) {
	cases := []struct {
		in   string
		want Column
	}{
		{"INT", Column{Kind: KindInt, Nullable: true}},
		{"NVARCHAR(100)", Column{Kind: KindNVarChar, Size: 100, Nullable: true}},
		{"nvarchar(-1)", Column{Kind: KindNVarChar, Size: -1, Nullable: true}},
		{"VARCHAR(MAX)", Column{Kind: KindVarChar, Size: -1, Nullable: true}},
		{"DECIMAL(10,2)", Column{Kind: KindDecimal, Precision: 10, Scale: 2, Nullable: true}},
		{"DATETIME2", Column{Kind: KindDateTime2, Scale: 7, Nullable: true}},
		{"DATETIME", Column{Kind: KindDateTime, Nullable: true}},
		{"BIT", Column{Kind: KindBit, Nullable: true}},
		{"BIGINT", Column{Kind: KindBigInt, Nullable: true}},
		{"FLOAT", Column{Kind: KindFloat, Nullable: true}},
		{"VARBINARY(16)", Column{Kind: KindVarBinary, Size: 16, Nullable: true}},
		{"UNIQUEIDENTIFIER", Column{Kind: KindUniqueIdentifier, Size: 16, Nullable: true}},
	}
	for _, c := range cases {
		got, ok := parseTypeName(c.in, 1)
		if !ok || got != c.want {
			t.Errorf("%s: got %+v ok=%v want %+v", c.in, got, ok, c.want)
		}
	}
	if _, ok := parseTypeName("", 1); ok {
		t.Error("empty type parsed")
	}
	if _, ok := parseTypeName("GEOGRAPHY", 1); ok {
		t.Error("unknown type parsed")
	}
}
