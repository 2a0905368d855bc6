package engine

import (
	"strings"
	"testing"
)

// shape renders parsed statements compactly: heads, IF/WHILE/BLOCK nesting.
func shape(list []*stmt) string {
	var parts []string
	for _, s := range list {
		switch s.kind {
		case skSimple:
			parts = append(parts, s.head())
		case skIf:
			p := "IF{" + shape(s.body) + "}"
			if s.els != nil {
				p += "ELSE{" + shape(s.els) + "}"
			}
			parts = append(parts, p)
		case skWhile:
			parts = append(parts, "WHILE{"+shape(s.body)+"}")
		case skBlock:
			parts = append(parts, "BLOCK{"+shape(s.body)+"}")
		case skTry:
			parts = append(parts, "TRY{"+shape(s.body)+"}CATCH{"+shape(s.els)+"}")
		}
	}
	return strings.Join(parts, " ")
}

func TestSplit(t *testing.T) {
	cases := []struct {
		sql  string
		want string
	}{
		{"SELECT 1", "SELECT"},
		{"SELECT 1; SELECT 2;", "SELECT SELECT"},
		{"SELECT 1 SELECT 2", "SELECT SELECT"},
		{"BEGIN TRANSACTION\nINSERT INTO t VALUES (1)\nCOMMIT", "BEGIN INSERT COMMIT"},
		{"BEGIN TRAN; SELECT 1; COMMIT;", "BEGIN SELECT COMMIT"},
		{"INSERT INTO t (a) SELECT a FROM u", "INSERT"},
		{"INSERT INTO t SELECT 1 UNION ALL SELECT 2", "INSERT"},
		{"INSERT INTO t VALUES (1) SELECT 2", "INSERT SELECT"},
		{"DELETE FROM x WHERE id IN (SELECT id FROM y)", "DELETE"},
		{"SELECT a FROM t UNION SELECT b FROM u", "SELECT"},
		{"UPDATE t SET a = 1 WHERE b = 2\nSET NOCOUNT ON", "UPDATE SET"},
		{"WITH c AS (SELECT 1 AS n) SELECT n FROM c", "WITH"},
		{"WITH c AS (SELECT 1 AS n) INSERT INTO t SELECT n FROM c", "WITH"},
		{"SELECT * FROM t WITH (NOLOCK) WHERE a = 1", "SELECT"},
		{"SELECT TOP 5 WITH TIES a FROM t ORDER BY a", "SELECT"},
		{"CREATE TABLE a (id INT REFERENCES b(id) ON DELETE CASCADE)", "CREATE"},
		{"DROP TABLE IF EXISTS t SELECT 1", "DROP SELECT"},
		{"IF @@TRANCOUNT > 0 ROLLBACK", "IF{ROLLBACK}"},
		{"IF OBJECT_ID('t') IS NOT NULL DROP TABLE t", "IF{DROP}"},
		{"IF EXISTS (SELECT 1 FROM t) SELECT 1 ELSE SELECT 2", "IF{SELECT}ELSE{SELECT}"},
		{"IF 1 = 1 BEGIN SELECT 1; SELECT 2 END ELSE BEGIN SELECT 3 END SELECT 4", "IF{BLOCK{SELECT SELECT}}ELSE{BLOCK{SELECT}} SELECT"},
		{"SELECT CASE WHEN a = 1 THEN 'x' ELSE 'y' END FROM t", "SELECT"},
		{"WHILE @i < 3 BEGIN SET @i = @i + 1 END", "WHILE{BLOCK{SET}}"},
		{"BEGIN TRY SELECT 1/0 END TRY BEGIN CATCH SELECT ERROR_MESSAGE() END CATCH", "TRY{SELECT}CATCH{SELECT}"},
		{"-- comment\nSELECT 1 /* SELECT 2 */", "SELECT"},
		{"SELECT 'a;SELECT b' AS x", "SELECT"},
		{"SELECT [select] FROM [insert]", "SELECT"},
		{"DECLARE @x INT = 5; SELECT @x", "DECLARE SELECT"},
		{"set implicit_transactions off\nset textsize 2147483647 select @@spid", "set set select"},
		{"EXEC sp_executesql N'SELECT 1' PRINT 'x'", "EXEC PRINT"},
		{"WAITFOR DELAY '00:00:01'; SELECT 1", "WAITFOR SELECT"},
		{"USE tenant_db SELECT DB_NAME()", "USE SELECT"},
		{"ALTER TABLE t ADD c INT", "ALTER"},
		{"ALTER TABLE t DROP COLUMN c", "ALTER"},
		{"SAVE TRANSACTION s1 ROLLBACK TRANSACTION s1", "SAVE ROLLBACK"},
	}
	for _, c := range cases {
		toks, lerr := lex(c.sql)
		if lerr != nil {
			t.Fatalf("%q: lex: %+v", c.sql, lerr)
		}
		list, perr := parseBatch(toks)
		if perr != nil {
			t.Fatalf("%q: parse: %+v", c.sql, perr)
		}
		got := shape(list)
		// heads keep the source spelling; compare case-insensitively.
		if !strings.EqualFold(got, c.want) {
			t.Errorf("%q:\n got %s\nwant %s", c.sql, got, c.want)
		}
	}
}

func TestSplitLines(t *testing.T) {
	toks, _ := lex("\nINSERT INTO t VALUES (1);\n\nSELECT 1\n/* x\n y */ SELECT 2")
	list, _ := parseBatch(toks)
	var lines []int
	for _, s := range list {
		lines = append(lines, s.line)
	}
	if len(lines) != 3 || lines[0] != 2 || lines[1] != 4 || lines[2] != 6 {
		t.Fatalf("lines = %v, want [2 4 6]", lines)
	}
}

func TestLexErrors(t *testing.T) {
	for _, q := range []string{"SELECT 'abc", "SELECT [abc", "SELECT 1 /* x"} {
		if _, err := lex(q); err == nil {
			t.Errorf("%q: want lex error", q)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, q := range []string{"END", "IF 1=1", "BEGIN SELECT 1", "ELSE SELECT 1"} {
		toks, _ := lex(q)
		if _, err := parseBatch(toks); err == nil {
			t.Errorf("%q: want parse error", q)
		}
	}
}
