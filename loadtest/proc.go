package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// backendNames are the commands the server runs per request; how many run
// at once shows whether its concurrency limit holds under a storm.
var backendNames = map[string]bool{"kubeadm": true, "kubectl": true}

// proc is what countProcs needs of one process.
type proc struct {
	comm string
	ppid int
}

// readStat reads comm (the same as /proc/PID/comm) and parent pid from the text of /proc/PID/stat,
// "PID (COMM) STATE PPID ...". COMM may hold spaces and parentheses, so it
// ends at the last ')'.
func readStat(stat string) (proc, bool) {
	lp, rp := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if lp < 0 || rp < lp {
		return proc{}, false
	}
	rest := strings.Fields(stat[rp+1:])
	if len(rest) < 2 {
		return proc{}, false
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return proc{}, false
	}
	return proc{comm: stat[lp+1 : rp], ppid: ppid}, true
}

// countProcs counts the processes under procRoot whose comm is in names,
// leaving out those whose parent is one too: a forked child keeps its
// parent's comm until it execs, so a shell-script kubeadm (as in tests)
// would otherwise count once per subshell. A parent other than 0 counts only
// that process's children, so that kubeadm runs by anything else on the
// machine (another test, an operator) do not count against the server. A
// process that exits between listing and reading is simply not counted.
func countProcs(procRoot string, names map[string]bool, parent int) (int, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, err
	}
	procs := make(map[int]proc, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process: self, sys, meminfo, ...
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue
		}
		if p, ok := readStat(string(b)); ok {
			procs[pid] = p
		}
	}
	n := 0
	for _, p := range procs {
		if names[p.comm] && !names[procs[p.ppid].comm] && (parent == 0 || p.ppid == parent) {
			n++
		}
	}
	return n, nil
}

// Sampler keeps the peak of countProcs, sampled on a ticker until stopped.
type Sampler struct {
	stop chan struct{}
	done chan struct{}
	peak int
	err  error
}

// StartSampler samples countProcs(procRoot, names, parent) every interval,
// starting at once.
func StartSampler(procRoot string, names map[string]bool, parent int, every time.Duration) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			n, err := countProcs(procRoot, names, parent)
			if err != nil {
				s.err = err // no /proc: nothing to sample, ever
				return
			}
			s.peak = max(s.peak, n)
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peak, or an error when procRoot could
// not be read.
func (s *Sampler) Stop() (int, error) {
	close(s.stop)
	<-s.done // orders the goroutine's writes before our reads
	return s.peak, s.err
}

// peakRSS returns the VmHWM (peak resident set) of pid in KiB, read from
// procRoot/pid/status.
func peakRSS(procRoot string, pid int) (int64, error) {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		// "VmHWM:	   23456 kB"
		fields := strings.Fields(v)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("pid %d: unexpected VmHWM line %q", pid, sc.Text())
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	// Kernel threads and zombies have no memory lines.
	return 0, fmt.Errorf("pid %d: no VmHWM in status", pid)
}
