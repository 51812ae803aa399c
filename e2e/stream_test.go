package e2e

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// stream is a steady stream of token requests from fresh machines: each
// with a name of its own, on a connection of its own, as booting machines
// ask through ePoxy.
type stream struct {
	start     time.Time
	hosts     []string
	sent      []time.Duration // when each request was sent, from start
	responses []response
	errs      []error
	wg        sync.WaitGroup
	mu        sync.Mutex
}

// startStream sends perSecond token requests a second to url for d, each
// from a new machine named with prefix, in the background. Wait returns
// once every one is answered.
func startStream(t *testing.T, url, prefix string, perSecond int, d time.Duration) *stream {
	t.Helper()
	n := perSecond * int(d/time.Second)
	s := &stream{start: time.Now(), hosts: make([]string, n), sent: make([]time.Duration, n),
		responses: make([]response, n), errs: make([]error, n)}
	bodies := make([][]byte, n)
	for i := range n {
		s.hosts[i] = fmt.Sprintf("mlab1-%s%03d.mlab-sandbox.measurement-lab.org", prefix, i)
		bodies[i] = extensionBody(t, s.hosts[i], "")
	}
	s.wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for i := range n {
			if i > 0 {
				<-tick.C
			}
			s.sent[i] = time.Since(s.start)
			s.wg.Go(func() {
				got, err := sendNewConn(url, bodies[i])
				s.mu.Lock()
				s.responses[i], s.errs[i] = got, err
				s.mu.Unlock()
			})
		}
	})
	return s
}

// Wait waits for every answer, then fails the test unless each request
// got a 200 with a working token of its own, and logs the latencies: the
// median, the worst, and the worst added to the median.
func (s *stream) Wait(t *testing.T, e *testEnv) {
	t.Helper()
	s.wg.Wait()
	var latencies []time.Duration
	failed := 0
	for i, err := range s.errs {
		if err != nil {
			if failed++; failed <= 10 {
				t.Errorf("%s, sent at %s: %v (refused or dropped)", s.hosts[i], s.sent[i].Round(time.Millisecond), err)
			}
			continue
		}
		latencies = append(latencies, s.responses[i].elapsed)
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests got no answer", failed, len(s.hosts))
	}
	checkJoinTokens(t, e, s.hosts, s.responses)
	slices.Sort(latencies)
	p50 := storm.Percentile(latencies, 50)
	worst := latencies[len(latencies)-1]
	t.Logf("%d token requests over %s, all answered: p50 %s, p99 %s, worst %s (%s added to the median)",
		len(s.hosts), s.sent[len(s.sent)-1].Round(time.Second), p50.Round(time.Millisecond),
		storm.Percentile(latencies, 99).Round(time.Millisecond), worst.Round(time.Millisecond), (worst - p50).Round(time.Millisecond))
}

// latencies returns the median and worst latency of the requests sent
// between from and to (offsets from the stream's start); call after Wait.
func (s *stream) latencies(from, to time.Duration) (p50, worst time.Duration) {
	var l []time.Duration
	for i, at := range s.sent {
		if at >= from && at < to && s.errs[i] == nil {
			l = append(l, s.responses[i].elapsed)
		}
	}
	if len(l) == 0 {
		return 0, 0
	}
	slices.Sort(l)
	return storm.Percentile(l, 50), l[len(l)-1]
}
