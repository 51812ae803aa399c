package overload

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	busy := New("too many commands running")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "Err", err: Err, want: true},
		{name: "a named cause", err: busy, want: true},
		{name: "a named cause, wrapped", err: fmt.Errorf("kubectl: %w: waited 1s", busy), want: true},
		{name: "another error", err: errors.New("overloaded"), want: false},
		{name: "nil", err: nil, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(tc.err, Err); got != tc.want {
				t.Errorf("errors.Is(%v, Err) = %t, want %t", tc.err, got, tc.want)
			}
		})
	}
	if got := busy.Error(); got != "too many commands running" {
		t.Errorf("New(msg).Error() = %q, want msg itself", got)
	}
	if errors.Is(busy, New("too many commands running")) {
		t.Error("two causes made by New are the same error, want each its own")
	}
}

func TestUntil(t *testing.T) {
	now := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{name: "a whole minute", at: now.Add(time.Minute), want: "60"},
		{name: "rounded up", at: now.Add(90*time.Second + 500*time.Millisecond), want: "91"},
		{name: "now", at: now, want: "1"},
		{name: "past", at: now.Add(-time.Hour), want: "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Until(tc.at, now); got != tc.want {
				t.Errorf("Until(now+%v) = %q, want %q", tc.at.Sub(now), got, tc.want)
			}
		})
	}
}
