package engine

import "testing"

func TestSmoke(t *testing.T) {
	e := openTest(t)
	s := newSess(t, e, 51)
	for _, q := range []string{
		"SELECT 1 AS resultado",
		"SELECT 'bucket-1' AS bucket, @@SERVERNAME AS server",
		"\nINSERT INTO test_table (name, value) VALUES ('test-exec', 42);\nSELECT SCOPE_IDENTITY() AS inserted_id;\n",
		"SELECT TOP 5 * FROM test_table ORDER BY id DESC;",
		"UPDATE test_table SET value = 99 WHERE name = 'test-exec';\nSELECT * FROM test_table WHERE name = 'test-exec';",
		"BEGIN TRANSACTION;\nINSERT INTO test_table (name, value) VALUES ('tx-test', 100);\nINSERT INTO test_table (name, value) VALUES ('tx-test', 200);\nCOMMIT TRANSACTION;\nSELECT * FROM test_table WHERE name = 'tx-test';",
		"SELECT @@SPID, @@VERSION, DB_NAME(), GETDATE(), SYSDATETIME(), SUSER_NAME(), NEWID(), CAST(1 AS BIGINT), CONVERT(NVARCHAR(50), 12), CAST('12.5' AS DECIMAL(10,2))",
		"select * from nosuch",
		"select nosuch from test_table",
		"selec 1",
		"SELECT value FROM generate_series(1, 3)",
		"SELECT TOP 3 n FROM standin_numbers",
		"DECLARE @x INT = 5; SELECT @x, @x + 1 AS y, 'a' + 'b' AS c",
		"IF @@TRANCOUNT > 0 ROLLBACK",
		"PRINT 'hello'",
	} {
		r := run(t, s, q)
		t.Logf("=== %s\n%s", q, r)
	}
}
