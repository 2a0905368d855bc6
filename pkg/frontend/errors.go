package frontend

import "fmt"

// Code is a refusal tdsgate itself sends a client. Its number is the TDS
// error number the client sees ("Msg 50004, Level 16, State 1").
type Code int32

// Refusal codes.
const (
	// CodeNoRoute: no routing rule matched the login and there is no default bucket.
	CodeNoRoute Code = 50001
	// CodeBackendUnavailable: the bucket's backend could not be reached, or its breaker is open.
	CodeBackendUnavailable Code = 50002
	// CodeBackendProtocol: the backend answered the login with something tdsgate cannot relay.
	CodeBackendProtocol Code = 50003
	// CodeQueueTimeout: waited in the bucket's queue past queue_timeout.
	CodeQueueTimeout Code = 50004
	// CodeQueueFull: the bucket's queue was full.
	CodeQueueFull Code = 50005
	// CodeShuttingDown: this instance is draining.
	CodeShuttingDown Code = 50006
	// CodeEncryption: the client's encryption choice is not allowed here.
	CodeEncryption Code = 50007
	// CodeUnsupportedLogin: integrated or federated authentication, or a TDS version tdsgate does not speak.
	CodeUnsupportedLogin Code = 50008
	// CodeBadLogin: the LOGIN7 could not be decoded.
	CodeBadLogin Code = 50009
	// CodeNoShare: the bucket's cap is shared through Redis, which this
	// instance has never reached, and it has no configured share
	// (redis.expected_instances 0).
	CodeNoShare Code = 50010
	// CodeLoginFailed is SQL Server's own "Login failed for user" (class
	// 14): a password that does not match the pooled connections' login.
	CodeLoginFailed Code = 18456
)

func (c Code) String() string {
	switch c {
	case CodeNoRoute:
		return "no_route"
	case CodeBackendUnavailable:
		return "backend_unavailable"
	case CodeBackendProtocol:
		return "backend_protocol"
	case CodeQueueTimeout:
		return "queue_timeout"
	case CodeQueueFull:
		return "queue_full"
	case CodeShuttingDown:
		return "shutting_down"
	case CodeEncryption:
		return "encryption"
	case CodeUnsupportedLogin:
		return "unsupported_login"
	case CodeBadLogin:
		return "bad_login"
	case CodeNoShare:
		return "no_share"
	case CodeLoginFailed:
		return "login_failed"
	}
	return fmt.Sprintf("code_%d", int32(c))
}

// Refusal is an error that becomes a TDS ERROR token for the client.
type Refusal struct {
	Code Code
	// Class is the severity the client sees (0: 16).
	Class uint8
	Msg   string
	Err   error // the cause, for logs; never shown to clients unless in Msg
}

func (r *Refusal) Error() string {
	if r.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", int32(r.Code), r.Code, r.Msg, r.Err)
	}
	return fmt.Sprintf("%d %s: %s", int32(r.Code), r.Code, r.Msg)
}

func (r *Refusal) Unwrap() error { return r.Err }

func refuse(code Code, err error, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Msg: fmt.Sprintf(format, args...), Err: err}
}
