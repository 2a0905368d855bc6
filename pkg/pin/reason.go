package pin

// Reason says why a session must stay on its backend connection. The values
// are stable snake_case strings: they are the "reason" label of
// proxy_sessions_pinned_total and appear in the pin log line.
type Reason string

// The pin reasons.
const (
	// SetOption: a SET option outside the replay allow-list (or with a
	// variable value, or inside control flow) changed session state.
	SetOption Reason = "set_option"
	// UseDatabase: USE, or a database ENVCHANGE from the server.
	UseDatabase Reason = "use_database"
	// Language: SET LANGUAGE @variable, or a language ENVCHANGE the caller
	// could not tie to a replayable SET LANGUAGE literal.
	Language Reason = "language"
	// TempTable: a #local or ##global temporary table created (CREATE
	// TABLE, SELECT ... INTO) or a temporary procedure (CREATE PROC #p).
	TempTable Reason = "temp_table"
	// Prepared: sp_prepare, sp_prepexec, sp_prepexecrpc, sp_execute,
	// sp_unprepare (handles live in the backend session).
	Prepared Reason = "prepared"
	// Cursor: DECLARE ... CURSOR, OPEN, sp_cursor*.
	Cursor Reason = "cursor"
	// AppRole: sp_setapprole / sp_unsetapprole.
	AppRole Reason = "app_role"
	// ExecuteAs: EXECUTE AS, SETUSER, REVERT.
	ExecuteAs Reason = "execute_as"
	// ContextInfo: SET CONTEXT_INFO.
	ContextInfo Reason = "context_info"
	// SessionContext: sp_set_session_context.
	SessionContext Reason = "session_context"
	// AppLock: sp_getapplock / sp_releaseapplock.
	AppLock Reason = "app_lock"
	// MARS: the client negotiated MARS (set by the caller, not the lexer).
	MARS Reason = "mars"
	// Attention: an ATTENTION race left the stream in doubt (set by the
	// caller).
	Attention Reason = "attention"
	// DistributedTran: BEGIN DISTRIBUTED TRANSACTION, a promoted or DTC
	// transaction, bound sessions (sp_bindsession, sp_getbindtoken).
	DistributedTran Reason = "distributed_tran"
	// BulkLoad: INSERT BULK, whose BULK_LOAD message must follow on the
	// same backend connection.
	BulkLoad Reason = "bulk_load"
	// SymmetricKey: OPEN SYMMETRIC KEY / OPEN MASTER KEY (keys stay open
	// for the session).
	SymmetricKey Reason = "symmetric_key"
	// Unknown: the text could not be read safely (unterminated literal or
	// comment, EXEC of a variable, an unrecognised SET, nesting too deep).
	Unknown Reason = "unparsed"
)

// Reasons lists every reason, in declaration order, for metric
// pre-registration and documentation.
var Reasons = []Reason{SetOption, UseDatabase, Language, TempTable, Prepared,
	Cursor, AppRole, ExecuteAs, ContextInfo, SessionContext, AppLock, MARS,
	Attention, DistributedTran, BulkLoad, SymmetricKey, Unknown}
