package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCachedCheck(t *testing.T) {
	errDown := errors.New("down")
	tests := []struct {
		name     string
		maxAge   time.Duration
		results  []error // what the check returns on each run
		calls    int     // how often Err is called
		wantRuns int
		wantErr  error
	}{
		{"first call runs the check", time.Hour, []error{nil}, 1, 1, nil},
		{"fresh result is reused", time.Hour, []error{errDown, nil}, 3, 1, errDown},
		{"stale result is refreshed", 0, []error{errDown, nil}, 2, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			c := &cachedCheck{MaxAge: tc.maxAge, Timeout: time.Second, Check: func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("check ran without a deadline")
				}
				err := tc.results[runs]
				runs++
				return err
			}}
			var err error
			for range tc.calls {
				err = c.Err()
			}
			if runs != tc.wantRuns || !errors.Is(err, tc.wantErr) {
				t.Errorf("after %d calls: %d runs, Err() = %v; want %d runs, %v", tc.calls, runs, err, tc.wantRuns, tc.wantErr)
			}
		})
	}
}
