package limiter

import (
	"fmt"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// Error numbers carried by admission errors: the TDS ERROR token numbers the
// frontend sends instead of LOGINACK. They are the same numbers as the tds
// package's, so clients see "Msg 50004" / "Msg 50005".
const (
	// NumQueueTimeout: the client waited in its bucket's queue past queue_timeout.
	NumQueueTimeout int32 = tds.ErrNumQueueTimeout
	// NumQueueFull: the bucket was full and its queue was too (or queueing is off).
	NumQueueFull int32 = tds.ErrNumQueueFull
	// NumNoShare: Redis was never reached and no share is configured.
	NumNoShare int32 = tds.ErrNumNoShare
)

// Code says why Acquire refused a slot.
type Code uint8

const (
	// CodeQueueTimeout: waited queue_timeout without getting a slot (50004).
	CodeQueueTimeout Code = iota + 1
	// CodeQueueFull: no free slot and no room in the queue (50005).
	CodeQueueFull
	// CodeClosed: the limiter was shut down (Close), before or while waiting.
	CodeClosed
	// CodeUnknownBucket: no bucket has that id (or it was removed by a reload
	// while the client waited).
	CodeUnknownBucket
	// CodeNoShare: the cap is shared through Redis, which this instance has
	// never reached, and redis.expected_instances is 0: it cannot know its
	// share of the cap, so it refuses (50011) rather than risk the cap.
	CodeNoShare
)

// String returns the code's name, e.g. "QueueFull".
func (c Code) String() string {
	switch c {
	case CodeQueueTimeout:
		return "QueueTimeout"
	case CodeQueueFull:
		return "QueueFull"
	case CodeClosed:
		return "Closed"
	case CodeUnknownBucket:
		return "UnknownBucket"
	case CodeNoShare:
		return "NoShare"
	}
	return fmt.Sprintf("Code(%d)", uint8(c))
}

// Error is an admission refusal. The fields describe the bucket as it was
// when the refusal was decided, so the message a client or log sees names
// the limit that applied.
type Error struct {
	Code     Code
	Bucket   string
	Max      int           // the bucket's max_connections
	Queue    int           // clients waiting in the queue (CodeQueueFull)
	MaxQueue int           // the bucket's max_queue_size
	Waited   time.Duration // time spent in the queue before the refusal
}

// Sentinels for errors.Is: errors.Is(err, ErrQueueFull) matches any *Error
// with that code, whatever its bucket.
var (
	ErrQueueTimeout  error = &Error{Code: CodeQueueTimeout}
	ErrQueueFull     error = &Error{Code: CodeQueueFull}
	ErrClosed        error = &Error{Code: CodeClosed}
	ErrUnknownBucket error = &Error{Code: CodeUnknownBucket}
)

// Error returns a readable message that names the bucket and its limits.
func (e *Error) Error() string {
	b := e.Bucket
	if b == "" {
		b = "?"
	}
	switch e.Code {
	case CodeQueueTimeout:
		return fmt.Sprintf("bucket %s: waited %s in queue for a slot (max_connections %d)",
			b, e.Waited.Round(time.Millisecond), e.Max)
	case CodeQueueFull:
		if e.MaxQueue == 0 {
			return fmt.Sprintf("bucket %s: all slots in use and queueing is off (max_queue_size 0, max_connections %d)", b, e.Max)
		}
		return fmt.Sprintf("bucket %s: queue full (%d waiting, max_queue_size %d, max_connections %d)",
			b, e.Queue, e.MaxQueue, e.Max)
	case CodeClosed:
		return fmt.Sprintf("bucket %s: limiter closed", b)
	case CodeUnknownBucket:
		return fmt.Sprintf("bucket %s: unknown bucket", b)
	case CodeNoShare:
		return fmt.Sprintf("bucket %s: the cap (max_connections %d) is shared through Redis, which this tdsgate instance has not reached since it started; "+
			"it admits nobody until it does (set redis.expected_instances to admit on a share meanwhile)", b, e.Max)
	}
	return fmt.Sprintf("bucket %s: admission refused (%s)", b, e.Code)
}

// Number returns the TDS error number the frontend sends for e:
// NumQueueTimeout, NumQueueFull, or 0 when the code has no number of its own.
func (e *Error) Number() int32 {
	switch e.Code {
	case CodeQueueTimeout:
		return NumQueueTimeout
	case CodeQueueFull:
		return NumQueueFull
	case CodeNoShare:
		return NumNoShare
	}
	return 0
}

// Is makes errors.Is(err, ErrQueueFull) and friends match on the code. A
// target with a Bucket set matches only that bucket.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Code == e.Code && (t.Bucket == "" || t.Bucket == e.Bucket)
}
