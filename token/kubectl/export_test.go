package kubectl

import "time"

// SetLateChecks sets lateChecks for a test and returns a function that
// restores them.
func SetLateChecks(d []time.Duration) (restore func()) {
	old := lateChecks
	lateChecks = d
	return func() { lateChecks = old }
}
