// Package overload names the one error for work the server could not take
// on in time, and the one Retry-After policy. It imports nothing of the
// project, so that command, kube, connlimit and handler all share it
// without import cycles.
//
// The Retry-After policy: every 503 for overload says RetryAfter, whatever
// was saturated (the command slots, the Kubernetes API or the client's rate
// limit in front of it, a program killed at its deadline, the connection
// limit); a 429 for a host at its token limit says when its oldest token
// expires (Until). Nothing else sends Retry-After.
package overload

import (
	"errors"
	"math"
	"strconv"
	"time"
)

// Err is overload: the server, or a backend behind it, could not take the
// work on in time, and the caller may try again later. Every overload error
// is Err or wraps it, so that errors.Is(err, Err) is the one test; the
// handler answers it with 503 and RetryAfter.
var Err = errors.New("overloaded")

// New returns an error that reads msg and wraps Err, for a package that
// names its own cause of overload (command.ErrBusy, kube.ErrOverloaded):
// errors.Is holds both for that error and for Err.
func New(msg string) error { return &cause{msg} }

type cause struct{ msg string }

func (c *cause) Error() string { return c.msg }
func (c *cause) Unwrap() error { return Err }

// RetryAfter is the Retry-After header, in seconds, of every 503 for
// overload. A boot storm lasts minutes and a request's backend work may take
// up to -backend-timeout: a caller that came back within a few seconds
// would find the same queue.
const RetryAfter = "30"

// Until returns the Retry-After header, in whole seconds and at least 1, of
// a caller that may try again at t: a host at its token limit, whose oldest
// token expires then.
func Until(t, now time.Time) string {
	secs := int64(math.Ceil(t.Sub(now).Seconds()))
	return strconv.FormatInt(max(secs, 1), 10)
}
