package storm

import (
	"sync/atomic"
	"testing"
	"time"
)

// durations returns 1ms..n ms, sorted.
func durations(n int) []time.Duration {
	d := make([]time.Duration, n)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Millisecond
	}
	return d
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", durations(1), 50, 1 * time.Millisecond},
		{"one sample p99", durations(1), 99, 1 * time.Millisecond},
		{"two samples p50 is the lower", durations(2), 50, 1 * time.Millisecond},
		{"ten p50", durations(10), 50, 5 * time.Millisecond},
		{"ten p90", durations(10), 90, 9 * time.Millisecond},
		{"ten p99 rounds up to the max", durations(10), 99, 10 * time.Millisecond},
		{"hundred p99 is the 99th, not the 100th", durations(100), 99, 99 * time.Millisecond},
		{"hundred p100 is the max", durations(100), 100, 100 * time.Millisecond},
		{"thousand p90", durations(1000), 90, 900 * time.Millisecond},
		{"p1 of hundred is the min", durations(100), 1, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%d samples, %d) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	for _, n := range []int{1, 2, 100} {
		var ran atomic.Int64
		wall := Release(n, func(i int) {
			ran.Add(1)
			time.Sleep(10 * time.Millisecond)
		})
		if ran.Load() != int64(n) {
			t.Errorf("Release(%d) ran %d machines", n, ran.Load())
		}
		// All at once: far less than n sleeps end to end.
		if n == 100 && wall >= time.Duration(n)*10*time.Millisecond {
			t.Errorf("Release(%d) took %s: the machines ran one after another", n, wall)
		}
	}
}

func TestSummarize(t *testing.T) {
	got := Summarize([]time.Duration{30 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond})
	want := Latency{P50: 20, P90: 30, P99: 30, Max: 30}
	if got != want {
		t.Errorf("Summarize() = %+v, want %+v", got, want)
	}
}
