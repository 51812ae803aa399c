package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeProc builds a /proc-like tree: files maps relative paths to contents.
func fakeProc(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestReadStat(t *testing.T) {
	tests := []struct {
		stat   string
		want   proc
		wantOK bool
	}{
		{"5835 (kubeadm) S 2683 5835 1 0 -1 4194560 150 0 0 0", proc{"kubeadm", 2683}, true},
		{"7 (odd) name)) R 1 7 7", proc{"odd) name)", 1}, true},
		{"8 (with space) S 2 8", proc{"with space", 2}, true},
		{"9 (short) S", proc{}, false},
		{"garbage", proc{}, false},
		{"10 (x) S notapid", proc{}, false},
	}
	for _, tt := range tests {
		got, ok := readStat(tt.stat)
		if ok != tt.wantOK || got != tt.want {
			t.Errorf("readStat(%q) = %+v, %v; want %+v, %v", tt.stat, got, ok, tt.want, tt.wantOK)
		}
	}
}

// stat is the start of a /proc/PID/stat line.
func stat(pid int, comm string, ppid int) string {
	return fmt.Sprintf("%d (%s) S %d %d 1 0 -1\n", pid, comm, ppid, pid)
}

func TestCountProcs(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		parent int
		want   int
	}{
		{"none", map[string]string{"1/stat": stat(1, "init", 0)}, 0, 0},
		{
			name: "kubeadm and kubectl counted, others not",
			files: map[string]string{
				"1/stat":    stat(1, "init", 0),
				"5/stat":    stat(5, "epoxy-extensio", 1),
				"10/stat":   stat(10, "kubeadm", 5),
				"11/stat":   stat(11, "kubeadm", 5),
				"12/stat":   stat(12, "kubectl", 5),
				"13/stat":   stat(13, "kubeadm-wrapper", 5),
				"14/stat":   stat(14, "sh", 5),
				"self/stat": stat(99, "kubeadm", 5), // not a pid: would count us twice
				"15/status": "gone\n",               // exited between listing and reading
			},
			want: 3,
		},
		{
			name: "subshells of a script kubeadm count once",
			files: map[string]string{
				"5/stat":  stat(5, "epoxy-extensio", 1),
				"10/stat": stat(10, "kubeadm", 5),
				"20/stat": stat(20, "kubeadm", 10),
				"21/stat": stat(21, "kubeadm", 20),
				"22/stat": stat(22, "head", 20),
				"30/stat": stat(30, "kubeadm", 404), // parent gone: counted
			},
			want: 2,
		},
		{
			name: "only the server's children",
			files: map[string]string{
				"5/stat":  stat(5, "epoxy-extensio", 1),
				"6/stat":  stat(6, "other-server", 1),
				"10/stat": stat(10, "kubeadm", 5),
				"11/stat": stat(11, "kubectl", 5),
				"20/stat": stat(20, "kubeadm", 10),
				"30/stat": stat(30, "kubeadm", 6),
				"31/stat": stat(31, "kubeadm", 1), // orphan of some other test
			},
			parent: 5,
			want:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := countProcs(fakeProc(t, tt.files), backendNames, tt.parent)
			if err != nil || got != tt.want {
				t.Errorf("countProcs = %d, %v; want %d, nil", got, err, tt.want)
			}
		})
	}
	if _, err := countProcs(filepath.Join(t.TempDir(), "missing"), backendNames, 0); err == nil {
		t.Error("countProcs of a missing root: err = nil, want an error")
	}
}

func TestSamplerKeepsPeak(t *testing.T) {
	root := fakeProc(t, map[string]string{"10/stat": stat(10, "kubeadm", 1), "11/stat": stat(11, "kubectl", 1)})
	s := StartSampler(root, backendNames, 0, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	// Processes end; the peak must stay.
	if err := os.RemoveAll(filepath.Join(root, "10")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if got, err := s.Stop(); err != nil || got != 2 {
		t.Errorf("peak = %d, %v; want 2, nil", got, err)
	}

	s = StartSampler(filepath.Join(root, "missing"), backendNames, 0, time.Millisecond)
	if _, err := s.Stop(); err == nil {
		t.Error("sampler of a missing root: err = nil, want an error")
	}
}

func TestPeakRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{"normal", "Name:\tepoxy-extensions\nVmPeak:\t 1300000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   20000 kB\n", 23456, false},
		{"kernel thread", "Name:\tkthreadd\nState:\tS (sleeping)\n", 0, true},
		{"odd unit", "VmHWM:\t 5 MB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeProc(t, map[string]string{"42/status": tt.status})
			got, err := peakRSS(root, 42)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("peakRSS = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := peakRSS(t.TempDir(), 42); err == nil {
		t.Error("peakRSS of a missing pid: err = nil, want an error")
	}
}
