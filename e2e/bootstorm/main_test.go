package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests never start the control plane: `go test ./...` runs them.

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		wantMachines []int
		wantBackends []string
		wantServer   []string
		wantErr      bool
	}{
		{name: "defaults", wantMachines: []int{100, 500}, wantBackends: []string{"original", "exec", "api"}},
		{name: "one of each", args: []string{"-machines", "100", "-backends", "api"}, wantMachines: []int{100}, wantBackends: []string{"api"}},
		{name: "spaces", args: []string{"-machines", "10, 20", "-backends", "api, exec"}, wantMachines: []int{10, 20}, wantBackends: []string{"api", "exec"}},
		{
			name:         "server flags",
			args:         []string{"-machines", "5", "--", "-max-concurrent-commands", "8", "-kube-api-qps=1000"},
			wantMachines: []int{5}, wantBackends: []string{"original", "exec", "api"},
			wantServer: []string{"-max-concurrent-commands", "8", "-kube-api-qps=1000"},
		},
		{name: "stray word", args: []string{"-machines", "5", "api"}, wantErr: true},
		{name: "zero machines", args: []string{"-machines", "0"}, wantErr: true},
		{name: "not a number", args: []string{"-machines", "100,many"}, wantErr: true},
		{name: "empty count", args: []string{"-machines", "100,"}, wantErr: true},
		{name: "repeated count", args: []string{"-machines", "100,100"}, wantErr: true},
		{name: "unknown backend", args: []string{"-backends", "exec,kubectl"}, wantErr: true},
		{name: "repeated backend", args: []string{"-backends", "api,api"}, wantErr: true},
		{name: "backend as server flag", args: []string{"--", "-kube-backend=api"}, wantErr: true},
		{name: "address as server flag", args: []string{"--", "--listen-address", ":1"}, wantErr: true},
		{name: "unknown flag", args: []string{"-n", "5"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			c, err := parseArgs(tt.args, &stderr)
			if tt.wantErr {
				if err == nil {
					t.Errorf("parseArgs(%q) = %+v, want an error", tt.args, c)
				}
				if stderr.Len() == 0 {
					t.Errorf("parseArgs(%q) printed no reason", tt.args)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tt.args, err)
			}
			if !slices.Equal(c.machines, tt.wantMachines) || !slices.Equal(c.backends, tt.wantBackends) || !slices.Equal(c.serverFlags, tt.wantServer) {
				t.Errorf("parseArgs(%q) = %v %q %q, want %v %q %q", tt.args, c.machines, c.backends, c.serverFlags,
					tt.wantMachines, tt.wantBackends, tt.wantServer)
			}
		})
	}
}

// loadtestJSON is what the loadtest prints for a storm of n machines that
// all got a token, taking wall ms, with a median latency of p50 ms.
func loadtestJSON(n int, wall, p50 float64, crossing int) string {
	return `{"url":"http://127.0.0.1:1/v2/allocate_k8s_token","machines":` + strconv.Itoa(n) +
		`,"wall_ms":` + ftoa(wall) + `,"statuses":{"200":` + strconv.Itoa(n) + `},` +
		`"latency_ms":{"p50":` + ftoa(p50) + `,"p90":1,"p99":` + ftoa(wall-1) + `,"max":` + ftoa(wall) + `},` +
		`"ok":` + strconv.Itoa(n) + `,"bad_bodies":0,"distinct_tokens":` + strconv.Itoa(n) + `,"duplicated_tokens":0,` +
		`"secrets":{"bootstrap_secrets":` + strconv.Itoa(n) + `,"tokens_crossing_hosts":` + strconv.Itoa(crossing) + `,"tokens_without_secret":0},` +
		`"peak_kubeadm_kubectl_processes":4,"process_scope":"children of pid 1","server_peak_rss_mib":42.25,"pass":true}`
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// mustRun is a run as storm would make it from the loadtest's output.
func mustRun(t *testing.T, n int, backend, out string) Run {
	t.Helper()
	r := Run{Machines: n, Backend: backend, Loadtest: []byte(out)}
	var err error
	if r.sum, err = parseSummary(r.Loadtest); err != nil {
		t.Fatal(err)
	}
	r.Problems = check(r)
	return r
}

func TestTableAndSpeedups(t *testing.T) {
	runs := []Run{
		mustRun(t, 100, original, loadtestJSON(100, 10000, 5000, 0)),
		mustRun(t, 100, "exec", loadtestJSON(100, 8000, 4000, 0)),
		mustRun(t, 100, "api", loadtestJSON(100, 250, 100, 0)),
		mustRun(t, 500, "exec", loadtestJSON(500, 40000, 20000, 0)),
		mustRun(t, 500, "api", loadtestJSON(500, 2000, 800, 0)),
		mustRun(t, 7, "api", loadtestJSON(7, 9, 5, 0)), // no exec run: no speedup
	}
	got := speedups(runs)
	want := []Speedup{{Machines: 100, Wall: 32, P50: 40, ExecOverOriginal: 0.8}, {Machines: 500, Wall: 20, P50: 25}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("speedups = %+v, want %+v", got, want)
	}
	var b bytes.Buffer
	printTable(&b, runs)
	for _, line := range []string{
		"| machines | backend | 200s | wall | p50 | p99 | max | peak server RSS MiB | peak kubeadm/kubectl procs | tokens crossing hosts |",
		"| 100 | exec | 100/100 | 8.00 s | 4.00 s | 8.00 s | 8.00 s | 42.2 | 4 | 0 |",
		"| 100 | api | 100/100 | 250 ms | 100 ms | 249 ms | 250 ms | 42.2 | 4 | 0 |",
		"| 7 | api | 7/7 | 9.0 ms | 5.0 ms | 8.0 ms | 9.0 ms | 42.2 | 4 | 0 |",
		"100 machines: exec's wall time is 0.80× the original's",
		"100 machines: api is 32.0× faster than exec (wall time); p50 ratio 40.0×",
		"500 machines: api is 20.0× faster than exec (wall time); p50 ratio 25.0×",
	} {
		if !slices.Contains(strings.Split(b.String(), "\n"), line) {
			t.Errorf("table lacks the line\n%s\ngot:\n%s", line, &b)
		}
	}
	if strings.Contains(b.String(), "FAIL") {
		t.Errorf("passing runs reported as failed:\n%s", &b)
	}
}

func TestCheck(t *testing.T) {
	shed := strings.Replace(loadtestJSON(10, 100, 50, 0), `"statuses":{"200":10}`, `"statuses":{"200":8,"503":2}`, 1)
	shed = strings.Replace(shed, `"ok":10`, `"ok":8`, 1)
	unchecked := strings.Replace(loadtestJSON(10, 100, 50, 0), `"secrets":`, `"ignored":`, 1)
	tests := []struct {
		name       string
		out        string
		exit       int
		serverExit string
		want       []string // each a part of one problem
	}{
		{name: "pass", out: loadtestJSON(10, 100, 50, 0)},
		{name: "crossing", out: loadtestJSON(10, 100, 50, 1), exit: 1, want: []string{"loadtest exited 1", "1 token(s) crossing hosts"}},
		{name: "shed", out: shed, want: []string{"8 usable 200 answers of 10 (200=8 503=2)"}},
		{name: "unchecked", out: unchecked, want: []string{"not checked"}},
		{name: "server exit", out: loadtestJSON(10, 100, 50, 0), serverExit: "exit status 1", want: []string{"server: exit status 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRun(t, 10, "api", tt.out)
			r.LoadtestExit, r.ServerExit = tt.exit, tt.serverExit
			got := check(r)
			if len(got) != len(tt.want) {
				t.Fatalf("check = %q, want %d problem(s) like %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}
	if _, err := parseSummary([]byte("loadtest: -n 0: want at least 1")); err == nil {
		t.Error("parseSummary accepted a non-JSON line")
	}
}

// TestSummaryMatchesLoadtest checks that every JSON name bootstorm reads is
// one the loadtest writes, from the loadtest's source: a rename there would
// otherwise read as zero here.
func TestSummaryMatchesLoadtest(t *testing.T) {
	written := map[string]bool{}
	for _, file := range []string{"../../loadtest/stats.go", "../../loadtest/storm/storm.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if field, ok := n.(*ast.Field); ok && field.Tag != nil {
				tag, _ := strconv.Unquote(field.Tag.Value)
				name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
				written[name] = true
			}
			return true
		})
	}
	var walk func(typ reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		for i := range typ.NumField() {
			name := typ.Field(i).Tag.Get("json")
			if !written[name] {
				t.Errorf("bootstorm reads %q, which the loadtest does not write", name)
			}
			walk(typ.Field(i).Type)
		}
	}
	walk(reflect.TypeFor[summary]())
}

func TestMillis(t *testing.T) {
	for ms, want := range map[float64]string{3.14: "3.1 ms", 42.4: "42 ms", 999.4: "999 ms", 1234: "1.23 s", 40702: "40.70 s"} {
		if got := millis(ms); got != want {
			t.Errorf("millis(%v) = %q, want %q", ms, got, want)
		}
	}
}

func TestShellLine(t *testing.T) {
	got := shellLine("go run ./e2e/bootstorm", []string{"-machines", "100,500", "--", "-allowed-sources", "", "it's"})
	want := `go run ./e2e/bootstorm -machines 100,500 -- -allowed-sources '' 'it'\''s'`
	if got != want {
		t.Errorf("shellLine = %s, want %s", got, want)
	}
}

func TestServedDurations(t *testing.T) {
	log := `{"msg":"Argument listen-address=:8800"}
{"msg":"request served","endpoint":"allocate_k8s_token_v1","duration_seconds":0.002,"backend_seconds":0.0015}
{"msg":"request served","endpoint":"bmc_store_password","duration_seconds":0.25,"backend_seconds":0.2}
{"msg":"request refused","endpoint":"allocate_k8s_token_v1","duration_seconds":0.001}
not json
{"msg":"request served","endpoint":"allocate_k8s_token_v2","duration_seconds":0.004}`
	tests := []struct {
		endpoint string
		own      bool
		want     []time.Duration
	}{
		{"allocate_k8s_token", false, []time.Duration{2 * time.Millisecond, 4 * time.Millisecond}},
		{"bmc_store_password", false, []time.Duration{250 * time.Millisecond}},
		{"node_delete", false, nil},
		{"", true, []time.Duration{500 * time.Microsecond, 50 * time.Millisecond, 4 * time.Millisecond}},
	}
	for _, tc := range tests {
		if got := servedDurations(log, tc.endpoint, tc.own); !slices.Equal(got, tc.want) {
			t.Errorf("servedDurations(%q, %v) = %v, want %v", tc.endpoint, tc.own, got, tc.want)
		}
	}
}

func TestProcUsageOfSelf(t *testing.T) {
	cpu, rss := procUsage(os.Getpid())
	if cpu < 0 || rss <= 0 {
		t.Errorf("procUsage(self) = %v s, %v MiB; want a resident size", cpu, rss)
	}
}
