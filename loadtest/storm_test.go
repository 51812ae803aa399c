package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMakeHosts(t *testing.T) {
	tests := []struct {
		format  string
		n       int
		want    []string
		wantErr bool
	}{
		{"load-%05d.example.org", 2, []string{"load-00000.example.org", "load-00001.example.org"}, false},
		{"mlab%d-lga01.mlab-sandbox.measurement-lab.org", 1, []string{"mlab0-lga01.mlab-sandbox.measurement-lab.org"}, false},
		{"load.example.org", 2, nil, true},       // no index: every machine the same
		{"Load-%d.example.org", 1, nil, true},    // uppercase
		{"-load%d.example.org", 1, nil, true},    // leading dash
		{"load-%s.example.org", 1, nil, true},    // wrong verb
		{"load-%d-%d.example.org", 1, nil, true}, // missing argument
	}
	for _, tt := range tests {
		got, err := makeHosts(tt.format, tt.n)
		if (err != nil) != tt.wantErr || strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("makeHosts(%q, %d) = %q, %v; want %q, error %v", tt.format, tt.n, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseToken(t *testing.T) {
	tests := []struct {
		name    string
		v1      bool
		body    string
		want    string
		wantErr bool
	}{
		{"v2", false, `{"api_address":"10.0.0.1:6443","token":"` + tokA + `","ca_hash":"sha256:00"}`, tokA, false},
		{"v2 without ca_hash", false, `{"api_address":"10.0.0.1:6443","token":"` + tokA + `"}`, "", true},
		{"v2 bad token", false, `{"api_address":"a:1","token":"ABCDEF.0123456789abcdef","ca_hash":"sha256:00"}`, "", true},
		{"v2 empty body", false, ``, "", true},
		{"v2 bare token", false, tokA, "", true},
		{"v1", true, tokA, tokA, false},
		{"v1 with newline", true, tokA + "\n", tokA, false},
		{"v1 empty", true, "", "", true},
		{"v1 JSON", true, `{"token":"` + tokA + `"}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseToken(tt.v1, []byte(tt.body))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseToken(%v, %q) = %q, %v; want %q, error %v", tt.v1, tt.body, got, err, tt.want, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("error %q leaks the token", err)
			}
		})
	}
}

// fakeServer hands out tokens the way epoxy-extensions should, or with the
// bugs the load test must catch, and keeps the Secrets it "created".
type fakeServer struct {
	// secretHost maps a requesting host to the host its token's Secret
	// names instead of its own: a crossing.
	secretHost map[string]string
	// shared, when set, is the one token every host gets.
	shared string
	// listFile, when set, receives secretList after every request, for a
	// fake kubectl to print.
	listFile string

	mu      sync.Mutex
	n       int
	secrets []map[string][]byte
	// fileMu orders file writes so that the last one holds every Secret.
	fileMu sync.Mutex
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		V1 *struct {
			Hostname string `json:"hostname"`
			LastBoot string `json:"last_boot"`
		} `json:"v1"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil || req.V1 == nil || req.V1.Hostname == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if _, err := time.Parse(time.RFC3339Nano, req.V1.LastBoot); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	host := req.V1.Hostname
	f.mu.Lock()
	f.n++
	tok := fmt.Sprintf("t%05d.%016d", f.n, f.n)
	if f.shared != "" {
		tok = f.shared
	}
	owner := host
	if h, ok := f.secretHost[host]; ok {
		owner = h
	}
	id, secret, _ := strings.Cut(tok, ".")
	f.secrets = append(f.secrets, map[string][]byte{
		"token-id": []byte(id), "token-secret": []byte(secret),
		"description": []byte("Allow " + owner + " to join the cluster"),
	})
	f.mu.Unlock()
	if f.listFile != "" {
		f.fileMu.Lock()
		err := os.WriteFile(f.listFile, f.secretList(), 0o644)
		f.fileMu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	fmt.Fprintf(w, `{"api_address":"10.0.0.1:6443","token":%q,"ca_hash":"sha256:%064d"}`, tok, 0)
}

// secretList renders the Secrets in the shape `kubectl get secrets -o json` prints.
func (f *fakeServer) secretList() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	type item struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Type string            `json:"type"`
		Data map[string][]byte `json:"data"`
	}
	var list struct {
		Items []item `json:"items"`
	}
	for _, d := range f.secrets {
		it := item{Type: bootstrapTokenType, Data: d}
		it.Metadata.Name = "bootstrap-token-" + string(d["token-id"])
		list.Items = append(list.Items, it)
	}
	b, err := json.Marshal(list)
	if err != nil {
		panic(err)
	}
	return b
}

func TestStorm(t *testing.T) {
	const n = 50
	hosts, err := makeHosts("load-%05d.example.org", n)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                             string
		fake                             *fakeServer
		wantDistinct, wantDup, wantCross int
		wantFailures                     int
	}{
		{"each host its own token", &fakeServer{}, n, 0, 0, 0},
		{
			name: "two hosts' Secrets swapped",
			fake: &fakeServer{secretHost: map[string]string{
				hosts[3]: hosts[4], hosts[4]: hosts[3],
			}},
			wantDistinct: n, wantCross: 2, wantFailures: 1,
		},
		{"one token for everyone", &fakeServer{shared: tokA}, 1, 1, n - 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.fake)
			defer srv.Close()
			results, wall := Storm(context.Background(), newClient(n, 10*time.Second), srv.URL+"/v2/allocate_k8s_token", false, hosts)
			s := Summarize(srv.URL, results, wall)
			secrets, err := parseSecrets(tt.fake.secretList())
			if err != nil {
				t.Fatal(err)
			}
			c := CheckSecrets(results, secrets)
			s.Secrets = &c
			if s.Statuses["200"] != n || s.OK != n {
				t.Errorf("statuses %v, OK %d; want %d OK (errors %q)", s.Statuses, s.OK, n, s.ErrorSamples)
			}
			if s.DistinctTokens != tt.wantDistinct || s.DuplicatedTokens != tt.wantDup || c.Crossing != tt.wantCross {
				t.Errorf("distinct %d, duplicated %d, crossing %d; want %d, %d, %d (%q)",
					s.DistinctTokens, s.DuplicatedTokens, c.Crossing, tt.wantDistinct, tt.wantDup, tt.wantCross, c.Examples)
			}
			if got := Verdict(s, true); len(got) != tt.wantFailures {
				t.Errorf("Verdict = %q, want %d failure(s)", got, tt.wantFailures)
			}
			for i, r := range results {
				if r.Host != hosts[i] {
					t.Fatalf("results[%d].Host = %q, want %q: results must stay in host order", i, r.Host, hosts[i])
				}
			}
		})
	}
}

// TestStormAllAtOnce checks that every request is in flight at the same
// time: the handler holds each until all have arrived, which would deadlock
// (and time out) if the client capped connections below n.
func TestStormAllAtOnce(t *testing.T) {
	const n = 64
	hosts, err := makeHosts("load-%05d.example.org", n)
	if err != nil {
		t.Fatal(err)
	}
	all := make(chan struct{})
	var mu sync.Mutex
	arrived := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		arrived++
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			fmt.Fprintf(w, "%s", tokA)
		case <-time.After(5 * time.Second):
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	results, _ := Storm(context.Background(), newClient(n, 10*time.Second), srv.URL+"/v1/allocate_k8s_token", true, hosts)
	s := Summarize(srv.URL, results, 0)
	if s.OK != n {
		t.Errorf("statuses %v, errors %q: want all %d requests in flight at once", s.Statuses, s.ErrorSamples, n)
	}
}
