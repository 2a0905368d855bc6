package pin

import (
	"reflect"
	"strings"
	"testing"
)

func TestScanBatch(t *testing.T) {
	type R = []Reason
	type S = []string
	cases := []struct {
		name   string
		sql    string
		pins   R
		replay S
		begin  bool
		end    bool
	}{
		// plain queries
		{name: "select", sql: "SELECT 1"},
		{name: "empty", sql: ""},
		{name: "whitespace", sql: " \r\n\t"},
		{name: "insert", sql: "INSERT INTO t (a, b) VALUES (1, 'x')"},
		{name: "update set column", sql: "UPDATE t SET nocount = 1, [ansi_nulls] = 2 WHERE id = 3"},
		{name: "update set compound", sql: "UPDATE t SET lock_timeout -= 1, x += 2"},
		{name: "update set qualified", sql: "UPDATE t SET t.NOCOUNT = 1"},
		{name: "update set udt method", sql: "UPDATE t SET doc.modify('delete /a')"},
		{name: "merge update set", sql: "MERGE t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.a = s.a;"},
		{name: "set variable", sql: "DECLARE @x int; SET @x = 5; SELECT @x"},
		{name: "set variable compound", sql: "SET @x += 1"},
		{name: "select variable", sql: "SELECT @x = 1"},
		{name: "fk set null", sql: "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u(a) ON DELETE SET NULL ON UPDATE SET DEFAULT"},
		{name: "option use hint", sql: "SELECT * FROM t OPTION (USE HINT('DISABLE_OPTIMIZER_ROWGOAL'))"},
		{name: "openquery", sql: "SELECT * FROM OPENJSON(@j)"},
		{name: "table variable", sql: "DECLARE @t TABLE (a int); INSERT @t VALUES (1); SELECT * FROM @t"},
		{name: "cursor variable declare", sql: "DECLARE @c CURSOR"},
		{name: "exec user proc", sql: "EXEC dbo.get_orders @id = 1"},
		{name: "exec user proc return", sql: "EXEC @rc = dbo.get_orders 1"},
		{name: "grant execute", sql: "GRANT EXECUTE ON dbo.p TO app"},
		{name: "bulk insert from file", sql: "BULK INSERT t FROM 'c:\\x.csv'"},

		// comments, strings and identifiers hide keywords
		{name: "line comment", sql: "SELECT 1 -- USE master; SET ROWCOUNT 1\n"},
		{name: "block comment", sql: "/* SET ANSI_NULLS OFF */ SELECT 1"},
		{name: "nested block comment", sql: "/* outer /* SET ROWCOUNT 1 */ still comment USE x */ SELECT 1"},
		{name: "string with use", sql: "SELECT 'USE x'"},
		{name: "string with escaped quote", sql: "SELECT 'it''s; USE x; SET ROWCOUNT 1'"},
		{name: "nstring", sql: "SELECT N'EXEC sp_prepare'"},
		{name: "quoted identifier", sql: `SELECT "USE" FROM "SET"`},
		{name: "bracket identifier", sql: "SELECT [use], [a]]USE b] FROM [not a #comment -- ]"},
		{name: "string with comment start", sql: "SELECT '/*' ; SELECT 1"},
		{name: "comment in string in comment", sql: "/* ' */ SELECT 1"},
		{name: "hash in string", sql: "SELECT '#tmp'"},
		{name: "temp in comment", sql: "/* CREATE TABLE #t (a int) */ SELECT 1 -- SELECT 1 INTO #u\n"},
		{name: "dash dash in string", sql: "SELECT '--', 'x' ; USE db2", pins: R{UseDatabase}},

		// replayable SETs
		{name: "nocount", sql: "SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},
		{name: "mixed case", sql: "sEt NoCount oFf", replay: S{"SET NOCOUNT OFF"}},
		{name: "option list", sql: "SET ANSI_NULLS, QUOTED_IDENTIFIER ON", replay: S{"SET ANSI_NULLS ON", "SET QUOTED_IDENTIFIER ON"}},
		{name: "isolation", sql: "set transaction isolation level read committed", replay: S{"SET TRANSACTION ISOLATION LEVEL READ COMMITTED"}},
		{name: "isolation repeatable", sql: "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", replay: S{"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"}},
		{name: "lock timeout negative", sql: "SET LOCK_TIMEOUT -1", replay: S{"SET LOCK_TIMEOUT -1"}},
		{name: "textsize", sql: "set textsize 2147483647", replay: S{"SET TEXTSIZE 2147483647"}},
		{name: "language", sql: "SET LANGUAGE us_english", replay: S{"SET LANGUAGE us_english"}},
		{name: "language string", sql: "SET LANGUAGE N'Français'", replay: S{"SET LANGUAGE N'Français'"}},
		{name: "dateformat", sql: "SET DATEFORMAT ymd", replay: S{"SET DATEFORMAT ymd"}},
		{name: "datefirst", sql: "SET DATEFIRST 7", replay: S{"SET DATEFIRST 7"}},
		{name: "implicit off", sql: "SET IMPLICIT_TRANSACTIONS OFF", replay: S{"SET IMPLICIT_TRANSACTIONS OFF"}},
		{name: "ansi defaults off", sql: "SET ANSI_DEFAULTS OFF", replay: S{"SET ANSI_DEFAULTS OFF"}},
		{name: "no separators", sql: "SET NOCOUNT ON SET XACT_ABORT ON SELECT 1",
			replay: S{"SET NOCOUNT ON", "SET XACT_ABORT ON"}},
		{name: "comment between", sql: "SET /* x */ ARITHABORT -- y\n ON", replay: S{"SET ARITHABORT ON"}},
		{name: "set after update", sql: "UPDATE t SET a = 1 WHERE b = 2 SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},
		{name: "update statistics then set", sql: "UPDATE STATISTICS t SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},

		// SETs that pin
		{name: "rowcount", sql: "SET ROWCOUNT 10", pins: R{SetOption}},
		{name: "implicit on", sql: "SET IMPLICIT_TRANSACTIONS ON", replay: S{"SET IMPLICIT_TRANSACTIONS ON"}},
		{name: "ansi defaults on", sql: "SET ANSI_DEFAULTS ON", replay: S{"SET ANSI_DEFAULTS ON"}},
		{name: "numeric roundabort", sql: "set numeric_roundabort off", replay: S{"SET NUMERIC_ROUNDABORT OFF"}},
		{name: "arithignore", sql: "SET ARITHIGNORE ON", pins: R{SetOption}},
		{name: "statistics", sql: "SET STATISTICS IO, TIME ON", pins: R{SetOption}},
		{name: "identity insert", sql: "SET IDENTITY_INSERT dbo.t ON", pins: R{SetOption}},
		{name: "fmtonly", sql: "SET FMTONLY ON SELECT * FROM t SET FMTONLY OFF", pins: R{SetOption}},
		{name: "mixed list", sql: "SET ANSI_NULLS, ARITHIGNORE ON", pins: R{SetOption}, replay: S{"SET ANSI_NULLS ON"}},
		{name: "lock timeout variable", sql: "SET LOCK_TIMEOUT @t", pins: R{SetOption}},
		{name: "language variable", sql: "SET LANGUAGE @lang", pins: R{Language}},
		{name: "context info", sql: "SET CONTEXT_INFO 0x1256698456", pins: R{ContextInfo}},
		{name: "unknown option", sql: "SET FUTURE_OPTION ON", pins: R{Unknown}},
		{name: "set bad value", sql: "SET NOCOUNT MAYBE", pins: R{Unknown}},
		{name: "set at end", sql: "SELECT 1 SET", pins: R{Unknown}},
		{name: "set quoted", sql: "SET [NOCOUNT] ON", pins: R{Unknown}},
		{name: "isolation bogus", sql: "SET TRANSACTION ISOLATION LEVEL CHAOS", pins: R{Unknown}},
		{name: "alter database set", sql: "ALTER DATABASE CURRENT SET ANSI_NULLS ON", pins: R{SetOption}},
		{name: "alter table set", sql: "ALTER TABLE t SET (LOCK_ESCALATION = AUTO)"},
		{name: "scoped config", sql: "ALTER DATABASE SCOPED CONFIGURATION SET MAXDOP = 1"},
		{name: "alter ends at semicolon", sql: "ALTER TABLE t ADD c int; SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},
		{name: "conditional set", sql: "IF @@TRANCOUNT = 0 SET NOCOUNT ON", pins: R{SetOption}},
		{name: "set in try", sql: "BEGIN TRY SET XACT_ABORT ON END TRY BEGIN CATCH END CATCH", pins: R{SetOption}},
		{name: "case else is not control", sql: "SET NOCOUNT ON; SELECT CASE WHEN a = 1 THEN 1 ELSE 2 END FROM t", replay: S{"SET NOCOUNT ON"}},
		{name: "else after case is control", sql: "SELECT CASE WHEN a = 1 THEN 1 END IF 1 = 1 SELECT 1 ELSE SET NOCOUNT ON", pins: R{SetOption}},
		{name: "drop if exists is not control", sql: "DROP TABLE IF EXISTS t; SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},
		{name: "if exists is control", sql: "IF EXISTS (SELECT 1) SET NOCOUNT ON", pins: R{SetOption}},
		{name: "jtds commit then set", sql: "IF @@TRANCOUNT > 0 COMMIT TRAN\nSET IMPLICIT_TRANSACTIONS OFF", replay: S{"SET IMPLICIT_TRANSACTIONS OFF"}, end: true},
		{name: "set after if statement", sql: "IF @x = 1 SELECT 1 SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},
		{name: "set governed by else", sql: "IF @x = 1 SELECT 1 ELSE SET NOCOUNT ON", pins: R{SetOption}},
		{name: "set governed by while", sql: "WHILE @i < 3 SET NOCOUNT ON", pins: R{SetOption}},
		{name: "set in block", sql: "IF @x = 1 BEGIN SELECT 1 SET NOCOUNT ON END", pins: R{SetOption}},
		{name: "set after block", sql: "IF @x = 1 BEGIN SELECT 1 END SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},
		{name: "set after block with case", sql: "IF @x = 1 BEGIN SELECT CASE WHEN 1 = 1 THEN 1 ELSE 0 END END SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}},
		{name: "set after return", sql: "IF @x = 1 RETURN SET NOCOUNT ON", pins: R{SetOption}},
		{name: "set in catch", sql: "BEGIN TRY SELECT 1 END TRY BEGIN CATCH SET NOCOUNT ON END CATCH SET XACT_ABORT ON", pins: R{SetOption}, replay: S{"SET XACT_ABORT ON"}},
		{name: "begin tran is not a block", sql: "BEGIN TRAN SET NOCOUNT ON", replay: S{"SET NOCOUNT ON"}, begin: true},
		{name: "dbcc traceon", sql: "DBCC TRACEON(3604)", pins: R{SetOption}},

		// other pins
		{name: "use", sql: "USE master", pins: R{UseDatabase}},
		{name: "use bracket", sql: "use [my db]; select 1", pins: R{UseDatabase}},
		{name: "temp create", sql: "CREATE TABLE #t (a int)", pins: R{TempTable}},
		{name: "temp global", sql: "CREATE TABLE ##g (a int)", pins: R{TempTable}},
		{name: "temp select into", sql: "SELECT a INTO #x FROM t", pins: R{TempTable}},
		{name: "temp bracketed", sql: "CREATE TABLE [#x] (a int)", pins: R{TempTable}},
		{name: "temp reference does not pin", sql: "SELECT * FROM (SELECT a FROM #x) q JOIN ##g ON 1 = 1"},
		{name: "temp insert into", sql: "INSERT INTO #x VALUES (1)", pins: R{TempTable}},
		{name: "temp qualified", sql: "CREATE TABLE tempdb.dbo.#x (a int)", pins: R{TempTable}},
		{name: "temp select into after top", sql: "SELECT TOP 0 * INTO [#x] FROM t", pins: R{TempTable}},
		{name: "temp proc", sql: "CREATE PROCEDURE #p AS SELECT 1", pins: R{TempTable}},
		{name: "proc body does not run", sql: "CREATE PROCEDURE dbo.p AS SET NOCOUNT ON; CREATE TABLE #t (a int); USE x"},
		{name: "create or alter proc", sql: "CREATE OR ALTER PROC p WITH EXECUTE AS OWNER AS SET ROWCOUNT 1"},
		{name: "cursor declare", sql: "DECLARE c CURSOR FOR SELECT a FROM t", pins: R{Cursor}},
		{name: "cursor open", sql: "OPEN c FETCH NEXT FROM c", pins: R{Cursor}},
		{name: "cursor scroll", sql: "DECLARE c SCROLL CURSOR FOR SELECT 1", pins: R{Cursor}},
		{name: "symmetric key", sql: "OPEN SYMMETRIC KEY k DECRYPTION BY CERTIFICATE c", pins: R{SymmetricKey}},
		{name: "exec prepare", sql: "DECLARE @h int; EXEC sp_prepare @h OUTPUT, N'@a int', N'SELECT @a'", pins: R{Prepared}},
		{name: "exec cursoropen qualified", sql: "exec master.dbo.[sp_CursorOpen] @c output, N'select 1'", pins: R{Cursor}},
		{name: "exec db dot dot", sql: "EXEC master..sp_getapplock @Resource='r', @LockMode='Exclusive'", pins: R{AppLock}},
		{name: "bare proc first", sql: "sp_setapprole 'r', 'p'", pins: R{AppRole}},
		{name: "bare proc not first", sql: "SELECT 1 sp_setapprole"},
		{name: "session context", sql: "EXEC sp_set_session_context @key = N'k', @value = 1", pins: R{SessionContext}},
		{name: "execute as", sql: "EXECUTE AS USER = 'u'; SELECT USER_NAME(); REVERT", pins: R{ExecuteAs}},
		{name: "setuser", sql: "SETUSER 'u'", pins: R{ExecuteAs}},
		{name: "insert bulk", sql: "insert bulk dbo.t ([a] int)", pins: R{BulkLoad}},
		{name: "distributed", sql: "BEGIN DISTRIBUTED TRANSACTION", pins: R{DistributedTran}, begin: true},
		{name: "exec proc variable", sql: "EXEC @proc", pins: R{Unknown}},
		{name: "exec dynamic variable", sql: "EXEC (@sql)", pins: R{Unknown}},
		{name: "executesql variable", sql: "EXEC sp_executesql @sql", pins: R{Unknown}},

		// dynamic SQL: scoped state does not pin, session state does
		{name: "dynamic set", sql: "EXEC('SET ROWCOUNT 1; USE x; CREATE TABLE #t (a int)')"},
		{name: "dynamic concat", sql: "EXEC ('SELECT ' + '1')"},
		{name: "dynamic applock", sql: "EXEC(N'EXEC sp_getapplock ''r'', ''Exclusive'', ''Session''')", pins: R{AppLock}},
		{name: "dynamic global temp", sql: "EXEC('CREATE TABLE ##g (a int)')", pins: R{TempTable}},
		{name: "executesql literal", sql: "EXEC sp_executesql N'SELECT * FROM t WHERE a = @a', N'@a int', @a = 1"},
		{name: "executesql named", sql: "EXEC sp_executesql @stmt = N'DECLARE c CURSOR GLOBAL FOR SELECT 1'", pins: R{Cursor}},
		{name: "dynamic begin tran", sql: "EXEC('BEGIN TRAN')", begin: true},

		// transactions (hints)
		{name: "begin tran", sql: "BEGIN TRAN; INSERT t VALUES (1)", begin: true},
		{name: "begin transaction named", sql: "BEGIN TRANSACTION t1", begin: true},
		{name: "begin end block", sql: "BEGIN SELECT 1 END"},
		{name: "commit", sql: "COMMIT", end: true},
		{name: "rollback", sql: "IF @@TRANCOUNT > 0 ROLLBACK TRAN", end: true},
		{name: "whole tran", sql: "BEGIN TRAN INSERT t VALUES (1) COMMIT TRAN", begin: true, end: true},

		// unreadable text pins Unknown
		{name: "unterminated string", sql: "SELECT 'abc", pins: R{Unknown}},
		{name: "unterminated bracket", sql: "SELECT [abc", pins: R{Unknown}},
		{name: "unterminated quoted", sql: `SELECT "abc`, pins: R{Unknown}},
		{name: "unterminated comment", sql: "SELECT 1 /* /* */", pins: R{Unknown}},
		{name: "unterminated dynamic", sql: "EXEC ('SELECT 1'", pins: R{Unknown}},

		// several reasons keep first-seen order, deduplicated
		{name: "multi", sql: "USE x; CREATE TABLE #a (i int); CREATE TABLE #b (i int); USE y; SET NOCOUNT ON",
			pins: R{UseDatabase, TempTable}, replay: S{"SET NOCOUNT ON"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ScanBatch(c.sql)
			if !reflect.DeepEqual(got.Pins, c.pins) {
				t.Errorf("ScanBatch(%q).Pins = %v, want %v", c.sql, got.Pins, c.pins)
			}
			if !reflect.DeepEqual(got.Replay, c.replay) {
				t.Errorf("ScanBatch(%q).Replay = %q, want %q", c.sql, got.Replay, c.replay)
			}
			if got.BeginsTran != c.begin || got.EndsTran != c.end {
				t.Errorf("ScanBatch(%q) tran hints = %v/%v, want %v/%v", c.sql, got.BeginsTran, got.EndsTran, c.begin, c.end)
			}
		})
	}
}

// Batches real drivers send, as the stand-in records them.
func TestScanBatchDriverBatches(t *testing.T) {
	cases := []struct {
		name   string
		sql    string
		pins   []Reason
		replay int
	}{
		{name: "jdbc-style connect", sql: "SET TEXTSIZE 2147483647\nSET LOCK_TIMEOUT -1\nSET QUOTED_IDENTIFIER ON\nSET ARITHABORT ON\nSET CONCAT_NULL_YIELDS_NULL ON\nSET ANSI_NULLS ON\nSET ANSI_PADDING ON\nSET ANSI_WARNINGS ON\nSET ANSI_NULL_DFLT_ON ON\nSET IMPLICIT_TRANSACTIONS OFF\nSET CURSOR_CLOSE_ON_COMMIT OFF\nSET DATEFORMAT mdy\nSET DATEFIRST 7\nSET TRANSACTION ISOLATION LEVEL READ COMMITTED", replay: 14},
		{name: "ssms-style connect", sql: "select @@spid;\nselect SERVERPROPERTY('ProductLevel');\nSET ROWCOUNT 0\nSET TEXTSIZE 2147483647\nSET NOCOUNT OFF\nSET CONCAT_NULL_YIELDS_NULL ON\nSET ARITHABORT ON\nSET LOCK_TIMEOUT -1\nSET QUERY_GOVERNOR_COST_LIMIT 0\nSET DEADLOCK_PRIORITY NORMAL\nSET TRANSACTION ISOLATION LEVEL READ COMMITTED\nSET ANSI_NULLS ON\nSET ANSI_NULL_DFLT_ON ON\nSET ANSI_PADDING ON\nSET ANSI_WARNINGS ON\nSET CURSOR_CLOSE_ON_COMMIT OFF\nSET IMPLICIT_TRANSACTIONS OFF\nSET QUOTED_IDENTIFIER ON\nselect @@spid", pins: []Reason{SetOption}, replay: 13},
		{name: "ef-style query", sql: "SELECT TOP(1) [o].[Id], [o].[Name]\nFROM [Orders] AS [o]\nWHERE [o].[Name] = N'x'", replay: 0},
	}
	for _, c := range cases {
		got := ScanBatch(c.sql)
		if !reflect.DeepEqual(got.Pins, c.pins) || len(got.Replay) != c.replay {
			t.Errorf("%s: pins %v (want %v), replay %d %q (want %d)", c.name, got.Pins, c.pins, len(got.Replay), got.Replay, c.replay)
		}
	}
}

func TestScanRPC(t *testing.T) {
	cases := []struct {
		name string
		id   uint16
		want []Reason
	}{
		{"", 1, []Reason{Cursor}},
		{"", 2, []Reason{Cursor}},
		{"", 9, []Reason{Cursor}},
		{"", 10, nil},
		{"", 11, []Reason{Prepared}},
		{"", 12, []Reason{Prepared}},
		{"", 13, []Reason{Prepared}},
		{"", 14, []Reason{Prepared}},
		{"", 15, []Reason{Prepared}},
		{"", 0, []Reason{Unknown}},
		{"", 16, []Reason{Unknown}},
		{"sp_executesql", 0, nil},
		{"dbo.get_orders", 0, nil},
		{"sp_prepexec", 0, []Reason{Prepared}},
		{"SP_PREPARE", 0, []Reason{Prepared}},
		{"[master].[sys].[sp_cursoropen]", 0, []Reason{Cursor}},
		{"master..sp_setapprole", 0, []Reason{AppRole}},
		{"sys.sp_set_session_context", 0, []Reason{SessionContext}},
		{"sp_getapplock", 0, []Reason{AppLock}},
		{"sp_getapplock;1", 0, []Reason{AppLock}},
		{`"sp_bindsession"`, 0, []Reason{DistributedTran}},
	}
	for _, c := range cases {
		if got := ScanRPC(c.name, c.id); !reflect.DeepEqual(got, c.want) {
			t.Errorf("ScanRPC(%q, %d) = %v, want %v", c.name, c.id, got, c.want)
		}
	}
}

func TestScanDynamic(t *testing.T) {
	cases := []struct {
		sql  string
		want []Reason
	}{
		{"SELECT * FROM t WHERE a = @a", nil},
		{"SET NOCOUNT ON; SET ROWCOUNT 5; USE x; SELECT * INTO #t FROM t", nil},
		{"SELECT * INTO ##t FROM t", []Reason{TempTable}},
		{"EXEC sp_getapplock 'r', 'Exclusive', 'Session'", []Reason{AppLock}},
		{"SET CONTEXT_INFO 0x01", []Reason{ContextInfo}},
		{"SELECT 'x", []Reason{Unknown}},
	}
	for _, c := range cases {
		if got := ScanDynamic(c.sql); !reflect.DeepEqual(got, c.want) {
			t.Errorf("ScanDynamic(%q) = %v, want %v", c.sql, got, c.want)
		}
	}
}

func TestDynamicDepthBounded(t *testing.T) {
	// Each level doubles the quotes; past MaxDynamicDepth the text pins.
	inner := "SELECT 1"
	for i := 0; i <= MaxDynamicDepth+1; i++ {
		inner = "EXEC('" + strings.ReplaceAll(inner, "'", "''") + "')"
	}
	if got := ScanBatch(inner).Pins; !reflect.DeepEqual(got, []Reason{Unknown}) {
		t.Fatalf("deep dynamic SQL pins %v, want [unparsed]", got)
	}
	shallow := "EXEC('EXEC(''SELECT 1'')')"
	if got := ScanBatch(shallow).Pins; got != nil {
		t.Fatalf("shallow dynamic SQL pins %v", got)
	}
}

func TestReplayAllowed(t *testing.T) {
	for _, s := range []string{"SET NOCOUNT ON", "SET TRANSACTION ISOLATION LEVEL SNAPSHOT", "SET LANGUAGE us_english", "SET LOCK_TIMEOUT -1"} {
		if !ReplayAllowed(s) {
			t.Errorf("ReplayAllowed(%q) = false", s)
		}
	}
	for _, s := range []string{"SET ROWCOUNT 1", "SET NOCOUNT ON; USE x", "set nocount on", "SET FMTONLY ON", "SELECT 1", "SET NOCOUNT ON SET XACT_ABORT ON"} {
		if ReplayAllowed(s) {
			t.Errorf("ReplayAllowed(%q) = true", s)
		}
	}
}

func TestMergeReplay(t *testing.T) {
	h := MergeReplay(nil, []string{"SET NOCOUNT ON", "SET ANSI_DEFAULTS OFF", "SET ANSI_NULLS ON"})
	h = MergeReplay(h, []string{"SET NOCOUNT OFF", "SET TRANSACTION ISOLATION LEVEL SNAPSHOT"})
	h = MergeReplay(h, []string{"SET TRANSACTION ISOLATION LEVEL READ COMMITTED"})
	want := []string{"SET ANSI_DEFAULTS OFF", "SET ANSI_NULLS ON", "SET NOCOUNT OFF", "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("MergeReplay = %q, want %q", h, want)
	}
}

func TestReasonsStable(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons {
		if seen[r] || r == "" || strings.ToLower(string(r)) != string(r) || strings.ContainsAny(string(r), " -") {
			t.Errorf("reason %q is not a unique snake_case label", r)
		}
		seen[r] = true
	}
	if Unknown != "unparsed" || SetOption != "set_option" {
		t.Fatal("reason values are metric labels and must not change")
	}
}
