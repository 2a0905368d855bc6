// Package engine is the SQL side of the SQL Server stand-in (tools/standin):
// a subset of T-SQL executed on SQLite (modernc.org/sqlite, pure Go). It is
// not a SQL Server. It exists so tdsgate's tests, benchmarks and demos can run
// real clients against something that answers like SQL Server where a proxy
// can tell: result column types, row counts, transactions and their
// @@TRANCOUNT, #temp tables private to a session, RESETCONNECTION, error
// numbers, WAITFOR and ATTENTION. It knows nothing about TDS bytes: the wire
// side drives a Session and turns Sink calls into tokens.
//
// # Model
//
// An Engine owns databases (one SQLite file each, WAL journal, busy_timeout
// LockWait) in Config.Dir; "master" and "tempdb" always exist. Each database's
// init SQL runs once, through the engine, when its file is first created.
// A Session is one client connection. It takes a *sql.Conn from its
// database's pool lazily, on first use, and gives it back after each batch
// unless a transaction or a #temp table must survive; a connection that held
// #temp tables is closed rather than pooled, so #temp tables never leak
// between sessions. Transactions are real SQLite transactions on that
// connection (deferred BEGIN; a writer waits up to LockWait for another
// session's write transaction, then gets error 1205).
//
// ExecBatch streams: each row goes to Sink.Row as SQLite produces it (a
// SELECT reads ahead at most 16 rows, only to type expression columns whose
// first values are NULL). Sink.Done is called once per executed statement
// (SET, DECLARE, BEGIN TRAN, ... included, with HasCount false); the caller
// decides which DONE is final. Sink.Tx is called only when the transaction
// really begins (@@TRANCOUNT 0 -> 1), commits (1 -> 0) or rolls back; nested
// BEGIN/COMMIT only move @@TRANCOUNT. An error is reported as Sink.Error then
// Done{Error: true}, and ends the batch (RAISERROR, as in SQL Server, does not;
// inside BEGIN TRY it transfers to BEGIN CATCH). A canceled ctx (ATTENTION)
// stops WAITFOR at once and a SELECT between rows; ExecBatch returns ctx.Err().
//
// SET IMPLICIT_TRANSACTIONS ON (how jTDS implements setAutoCommit(false))
// works as in SQL Server: while @@TRANCOUNT is 0, ALTER TABLE, CREATE (not
// CREATE DATABASE), DELETE, DROP, INSERT, MERGE, TRUNCATE TABLE, UPDATE, a
// SELECT that reads a table (has a FROM or INTO, also in a subquery, an IF
// or WHILE condition or an assigned expression) and BEGIN TRAN first begin a
// transaction (Sink.Tx(TxBegin, 1); BEGIN TRAN then makes @@TRANCOUNT 2).
// "SELECT 1" and "IF @@TRANCOUNT > 0 COMMIT" do not. The transaction lasts
// until COMMIT or ROLLBACK; SET IMPLICIT_TRANSACTIONS OFF does not end it.
// The option shows as bit 2 of @@OPTIONS and Reset turns it off.
//
// # Supported T-SQL
//
// Batches are split into statements at ';' or, as T-SQL allows, where the next
// statement visibly begins (split.go). Supported statements:
//
//   - SELECT [DISTINCT] [TOP n | TOP (expr)] ... with FROM, JOIN, WHERE, GROUP BY,
//     HAVING, ORDER BY, OFFSET/FETCH, UNION, subqueries, WITH cte AS (...) (also
//     recursive), SELECT col = expr, SELECT @v = expr, SELECT ... INTO [#]t.
//   - INSERT [INTO] ... VALUES (multi-row) | SELECT | DEFAULT VALUES; UPDATE
//     (incl. UPDATE ... FROM as SQLite accepts it); DELETE [FROM]; TRUNCATE TABLE.
//   - CREATE TABLE (IDENTITY[(seed, inc)], PRIMARY KEY, UNIQUE, DEFAULT, CHECK,
//     REFERENCES, named constraints, CLUSTERED, ON [PRIMARY]); CREATE [UNIQUE]
//     [NON]CLUSTERED INDEX; CREATE VIEW; CREATE DATABASE; DROP TABLE/VIEW/INDEX
//     [IF EXISTS]; ALTER TABLE ADD col / DROP COLUMN. #temp and ##temp tables.
//   - BEGIN TRAN[SACTION], COMMIT [TRAN|TRANSACTION|WORK], ROLLBACK [...] [name],
//     SAVE TRAN name.
//   - SET NOCOUNT, SET LANGUAGE (-> @@LANGUAGE), SET XACT_ABORT, SET TEXTSIZE,
//     SET IMPLICIT_TRANSACTIONS (also set by SET ANSI_DEFAULTS); any other SET
//     option is accepted and ignored. SET @v = / += expr.
//   - DECLARE @v type [= expr], ...; IF ... [ELSE ...]; WHILE (BREAK, CONTINUE);
//     BEGIN ... END; BEGIN TRY ... END TRY BEGIN CATCH ... END CATCH; RETURN;
//     PRINT; RAISERROR; THROW; USE db; WAITFOR DELAY | TIME.
//   - EXEC sp_executesql N'...', N'@a INT, ...', @a = ...; EXEC ('...');
//     EXEC sp_reset_connection, sp_datatype_info_100 / sp_datatype_info (the
//     ODBC type catalog, for the types pyodbc asks about; also called without
//     EXEC, as FreeTDS ODBC does). Other procedures: error 2812.
//
// Expressions are SQLite's, with T-SQL spellings translated (translate.go):
// [quoted] identifiers, N'...' literals, 0x binary literals, dbo./db.dbo./db..
// prefixes, table hints (dropped), CAST/CONVERT/TRY_CAST, ISNULL, LEN,
// DATALENGTH, SUBSTRING, CHARINDEX, LEFT, RIGHT, REPLICATE, SPACE, REVERSE,
// DATEADD, DATEDIFF, DATEPART, YEAR/MONTH/DAY, GETDATE, GETUTCDATE,
// SYSDATETIME, SYSUTCDATETIME, CURRENT_TIMESTAMP, NEWID, OBJECT_ID,
// SERVERPROPERTY, SCOPE_IDENTITY, IDENT_CURRENT, DB_NAME, DB_ID, SUSER_NAME,
// SUSER_SNAME, SYSTEM_USER, USER_NAME, XACT_STATE, ERROR_MESSAGE/NUMBER/...,
// '+' as string concatenation when an operand is visibly a string, and the
// @@ variables SPID, TRANCOUNT, ROWCOUNT, ERROR, IDENTITY, SERVERNAME,
// VERSION, LANGUAGE, TEXTSIZE, OPTIONS, MAX_PRECISION and a few more.
// Variables and parameters (Param, sp_executesql) are bound as SQLite
// parameters. Character columns compare case-insensitively (COLLATE NOCASE,
// like SQL Server's default collation; ASCII only).
//
// # Types
//
// CREATE TABLE keeps the declared SQL Server type as SQLite's declared type,
// so table columns report their Kind, Size, Precision and Scale; values are
// converted to the Go types documented on Column. Expression columns take
// their type from CAST/CONVERT, from known functions (COUNT -> INT,
// SCOPE_IDENTITY -> NUMERIC(38,0), GETDATE -> DATETIME, @@SPID -> SMALLINT,
// ...), from a variable's declared type, or from the first non-NULL value:
// an integer that fits int32 is INT, else BIGINT; a float is FLOAT; a string
// is NVARCHAR(len) for a single-row SELECT without FROM, NVARCHAR(4000)
// otherwise; all NULL is INT. IDENTITY is emulated with an AFTER INSERT
// trigger and a counter table (__standin_identity).
//
// # Row generators
//
// For benchmarks, every database has two virtual tables that generate
// integers on demand (constant memory, streamed):
//
//	SELECT value FROM generate_series(1, 100000[, step])
//	SELECT TOP 100000 n FROM standin_numbers         -- 1, 2, 3, ... (up to 2^31-1)
//	SELECT n FROM standin_numbers WHERE n <= 500
//
// # Not supported
//
// Stored procedures and functions (CREATE PROCEDURE/FUNCTION), table
// variables, cursors, MERGE, OUTPUT clauses, UPDATE/DELETE TOP, PIVOT,
// sys.* and INFORMATION_SCHEMA views, the full type-conversion rules (SQLite
// converts 'abc' to INT as 0 instead of raising 245), division by a zero
// that is not a literal (SQLite yields NULL), string length limits, row
// locking (SQLite has one writer per database at a time) and anything
// needing SQL Server's optimizer or catalog. Unsupported statements fail with
// a SQL Server-style error rather than being silently ignored.
//
// Client SQL is untrusted: a malformed batch is error 102 ("Incorrect
// syntax near ...", on the offending token's line) or the fitting error
// number, never a panic or a hang. Parsers use syntaxAt and splitTopLevel
// rather than indexing token slices; FuzzCompile and FuzzExecBatch
// (fuzz_test.go, regressions in testdata/fuzz) and TestMalformedBatches
// (every statement kind cut and broken token by token) check it.
package engine
