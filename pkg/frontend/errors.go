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
	// CodeTooManyFailures: the client's address failed credential routes
	// (route password_hash) too often in credential_routes.failure_window;
	// its logins that would need a password check are refused until the
	// window passes.
	CodeTooManyFailures Code = 50010
	// CodeNoShare: the bucket's cap is shared through Redis, which this
	// instance has never reached, and it has no configured share
	// (redis.expected_instances 0).
	CodeNoShare Code = 50011
	// CodeKilled: an administrator ended the session (POST
	// /admin/sessions/{id}/kill, `proxy admin kill`).
	CodeKilled Code = 50012
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
	case CodeTooManyFailures:
		return "too_many_failures"
	case CodeNoShare:
		return "no_share"
	case CodeKilled:
		return "killed"
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

// unavailable is the refusal of a login whose bucket's backend could not
// be reached or could not log it in (50002). The client learns only that
// the bucket is unavailable: the backend's address and the cause (err) go
// to the log, never to a client that has not logged in.
func unavailable(bucket string, err error) *Refusal {
	return refuse(CodeBackendUnavailable, err, "bucket %s is unavailable; try again later", bucket)
}

// protocolError is the refusal of a login the backend answered with
// something tdsgate cannot relay (50003); the details go to the log only.
func protocolError(bucket string, err error) *Refusal {
	return refuse(CodeBackendProtocol, err, "bucket %s could not complete the login; try again later", bucket)
}

// tooManyFailures is the refusal of a login from an address that failed
// credential routes too often (route.RuleThrottled, 50010).
func tooManyFailures() *Refusal {
	return refuse(CodeTooManyFailures, nil, "too many failed logins from this address; try again later")
}
