// Package storm is the boot-storm engine and its statistics, shared by the
// load command (loadtest/), the exec-vs-api and via-ePoxy benchmark
// (e2e/bootstorm) and the end-to-end suite: Release lets many machines go at
// the same instant, and Latency summarises how long they waited.
package storm

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Release runs machine(i) for i in 0..n-1, each in its own goroutine, all
// let go at the same instant once every goroutine is ready, and returns the
// wall time from that instant to the last return. Work done before the
// release (building bodies, starting goroutines) is not part of the storm.
func Release(n int, machine func(i int)) time.Duration {
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			machine(i)
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	return time.Since(t0)
}

// Latency holds latency percentiles in milliseconds.
type Latency struct {
	// P50, P90 and P99 are nearest-rank percentiles.
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	// Max is the slowest request: the machine that waited longest.
	Max float64 `json:"max"`
}

// Summarize returns the percentiles of latencies, which it sorts.
func Summarize(latencies []time.Duration) Latency {
	slices.Sort(latencies)
	return Latency{
		P50: Ms(Percentile(latencies, 50)),
		P90: Ms(Percentile(latencies, 90)),
		P99: Ms(Percentile(latencies, 99)),
		Max: Ms(Percentile(latencies, 100)),
	}
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations, or 0 for none. Integer arithmetic keeps p99 of 100
// samples at the 99th, where float rounding could give the 100th.
func Percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// Ms converts d to milliseconds, rounded to microseconds for printing.
func Ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3
}
