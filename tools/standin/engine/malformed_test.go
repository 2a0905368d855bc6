package engine

import (
	"context"
	"strings"
	"testing"
	"time"
)

// wellFormed are statements of every kind the engine runs. The malformed
// tests cut and break them token by token.
var wellFormed = []string{
	"SELECT TOP 2 name, value FROM test_table WHERE value > 0 ORDER BY id DESC",
	"SELECT TOP (1) WITH TIES x = 1, 'a' AS b, c.* FROM test_table c",
	"SELECT DISTINCT name FROM test_table ORDER BY name OFFSET 1 ROWS FETCH NEXT 1 ROWS ONLY",
	"SELECT CAST(1 AS BIGINT), CONVERT(NVARCHAR(5), 12, 1), ISNULL(NULL, 3), TRY_CAST('1' AS INT)",
	"SELECT DATEADD(day, 1, GETDATE()), DATEDIFF(hour, GETDATE(), GETDATE()), DATEPART(year, GETDATE())",
	"SELECT OBJECT_ID('dbo.test_table'), OBJECT_ID(N'#t', 'U'), SERVERPROPERTY('ProductVersion'), IDENT_CURRENT('test_table')",
	"SELECT SCOPE_IDENTITY(), @@SPID, @@TRANCOUNT, SYSTEM_USER, CURRENT_TIMESTAMP, 'a' + name + 'b' FROM test_table",
	"SELECT CASE WHEN value > 1 THEN 'x' ELSE 'y' END AS k FROM test_table WITH (NOLOCK) GROUP BY value HAVING COUNT(*) > 0",
	"WITH n AS (SELECT 1 AS v UNION ALL SELECT v + 1 FROM n WHERE v < 3) SELECT v FROM n",
	"WITH n (v) AS (SELECT 1) INSERT INTO test_table (value) SELECT v FROM n",
	"SELECT name INTO #copy FROM tenant_db.dbo.test_table",
	"INSERT INTO test_table (name, value) VALUES ('x', 1), (N'y', 2)",
	"INSERT test_table DEFAULT VALUES",
	"INSERT INTO test_table (name) SELECT TOP 1 name FROM test_table",
	"UPDATE test_table SET value = value + 1, name = 'z' WHERE id = 1",
	"DELETE test_table WHERE id = -1",
	"TRUNCATE TABLE test_table",
	"CREATE TABLE #t (id INT IDENTITY(1,1) PRIMARY KEY, n NVARCHAR(10) NOT NULL DEFAULT N'a', d DATETIME DEFAULT GETDATE(), CONSTRAINT ck CHECK (id > 0))",
	"CREATE TABLE t2 (a INT, b DECIMAL(10,2) COLLATE Latin1_General_CS_AS, CONSTRAINT pk PRIMARY KEY CLUSTERED (a) WITH (PAD_INDEX = OFF) ON [PRIMARY])",
	"CREATE UNIQUE NONCLUSTERED INDEX ix ON test_table (name) INCLUDE (value) WITH (ONLINE = ON)",
	"CREATE VIEW v AS SELECT id FROM test_table",
	"CREATE DATABASE fuzz_db",
	"DROP TABLE IF EXISTS #t, t2",
	"DROP INDEX ix ON test_table",
	"ALTER TABLE test_table ADD COLUMN extra INT DEFAULT 0, more NVARCHAR(5)",
	"ALTER TABLE test_table DROP COLUMN extra, more",
	"BEGIN TRANSACTION; SAVE TRANSACTION sp; ROLLBACK TRANSACTION sp; COMMIT TRANSACTION",
	"SET NOCOUNT ON; SET XACT_ABORT OFF; SET IMPLICIT_TRANSACTIONS OFF; SET LANGUAGE us_english; SET TEXTSIZE 100",
	"DECLARE @a INT = 1, @b AS NVARCHAR(10) = N'x', @c DECIMAL(10, 2); SET @a += 2; SELECT @c = 1.5; SELECT @a, @b, @c",
	"IF @@TRANCOUNT > 0 ROLLBACK ELSE BEGIN PRINT 'none'; SELECT 1 END",
	"DECLARE @i INT = 0; WHILE @i < 3 BEGIN SET @i = @i + 1; IF @i = 2 CONTINUE; IF @i = 5 BREAK END",
	"BEGIN TRY SELECT 1/0 END TRY BEGIN CATCH SELECT ERROR_NUMBER(), ERROR_MESSAGE(); THROW END CATCH",
	"RAISERROR('bad %s %d', 16, 1, 'thing', 5)",
	"THROW 50001, 'boom', 1",
	"EXEC sp_executesql N'SELECT @a + @b', N'@a INT, @b INT OUTPUT', @a = 1, @b = 2",
	"EXEC ('SELECT 1'); EXECUTE sp_reset_connection",
	"USE other_db; USE tenant_db",
	"WAITFOR DELAY '00:00:00.001'",
	"WAITFOR TIME '00:00'",
	"PRINT N'done'; RETURN",
}

// TestMalformedBatches cuts every well-formed statement after each token
// and drops each single token: whatever is left must fail (or run) with a
// SQL Server error, never a panic (8630), and every syntax error must
// carry a line.
func TestMalformedBatches(t *testing.T) {
	t.Parallel()
	e := openTest(t)
	seen := map[string]bool{}
	var batches []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			batches = append(batches, s)
		}
	}
	for _, src := range wellFormed {
		toks, lerr := lex(src)
		if lerr != nil {
			t.Fatalf("%q: %v", src, lerr.msg)
		}
		texts := make([]string, len(toks))
		for i, tk := range toks {
			texts[i] = tk.render()
			if tk.kind == tkBinary {
				texts[i] = "0x" + tk.text
			}
		}
		for i := range toks {
			add(strings.Join(texts[:i+1], " "))                                              // cut after token i
			add(strings.Join(append(append([]string{}, texts[:i]...), texts[i+1:]...), " ")) // drop token i
			add(strings.Join(append(append(append([]string{}, texts[:i+1]...), ","), texts[i+1:]...), " "))
		}
	}
	if raceEnabled || testing.Short() {
		// Under the race detector SQLite is slow: keep every third.
		var few []string
		for i, b := range batches {
			if i%3 == 0 {
				few = append(few, b)
			}
		}
		batches = few
	}
	for _, b := range batches {
		s, err := e.NewSession(SessionInfo{ServerName: "malformed", SPID: 52}, "tenant_db")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		rec := &recSink{}
		_ = s.ExecBatch(ctx, b, nil, rec)
		cancel()
		s.Close()
		for _, er := range rec.errors() {
			if er.Number == 8630 {
				t.Errorf("%q: %s", b, er.Message)
			}
			if er.Number == ErrSyntax && er.Line == 0 {
				t.Errorf("%q: syntax error without a line: %s", b, er.Message)
			}
		}
	}
	t.Logf("%d batches", len(batches))
}

// TestSyntaxErrorPlacement: a malformed statement is error 102 naming the
// offending token (the last one when the statement is cut short) on its
// own line, as SQL Server reports it.
func TestSyntaxErrorPlacement(t *testing.T) {
	t.Parallel()
	s := newSess(t, openTest(t), 53)
	cases := []struct {
		sql  string
		near string
		line int32
	}{
		{"SELECT 1\nDECLARE ,000000000000000", ",", 2},
		{"DECLARE @a INT,\n@b", "@b", 2},
		{"DECLARE @a INT =", "=", 1},
		{"SELECT TOP", "TOP", 1},
		{"SELECT 1 +", "+", 1},
		{"SELECT name FROM test_table WHERE\nvalue >", ">", 2},
		{"ALTER TABLE test_table\nADD x INT,,", ",", 2},
		{"CREATE TABLE t (a INT,\n)", ")", 2},
		{"IF 1 = 1\nBEGIN\nSELECT 1", "1", 3},
		{"SELECT CAST(1 AS\nINT x)", "x", 2},
		{"SET ,", ",", 1},
		{"RAISERROR('x', 16,, 1)", ",", 1},
		{"EXEC sp_executesql N'SELECT 1', N'@a INT,,'", ",", 1},
	}
	for _, c := range cases {
		r := run(t, s, c.sql)
		errs := r.errors()
		want := "Incorrect syntax near '" + c.near + "'."
		if len(errs) != 1 || errs[0].Number != ErrSyntax || errs[0].Message != want || errs[0].Line != c.line {
			t.Errorf("%q: want 102 %q line %d, got:\n%s", c.sql, want, c.line, r)
		}
	}
}
