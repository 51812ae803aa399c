package main

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// Tokens used across tests; all match tokenRE.
const (
	tokA = "aaaaaa.0123456789abcdef"
	tokB = "bbbbbb.0123456789abcdef"
	tokC = "cccccc.0123456789abcdef"
)

func TestSummarize(t *testing.T) {
	results := []Result{
		{Host: "h0", Status: 200, Token: tokA, Latency: 10 * time.Millisecond},
		{Host: "h1", Status: 200, Token: tokB, Latency: 20 * time.Millisecond},
		{Host: "h2", Status: 200, Token: tokA, Latency: 30 * time.Millisecond}, // duplicate of h0
		{Host: "h3", Status: 200, Err: errors.New("v2 body is not JSON"), Latency: 40 * time.Millisecond},
		{Host: "h4", Status: 500, Latency: 50 * time.Millisecond},
		{Host: "h5", Err: errors.New("connection refused"), Latency: 60 * time.Millisecond},
	}
	s := Summarize("http://x/v2/allocate_k8s_token", results, 1500*time.Millisecond)
	checks := []struct {
		name      string
		got, want any
	}{
		{"Machines", s.Machines, 6},
		{"WallMS", s.WallMS, 1500.0},
		{"Statuses", s.Statuses, map[string]int{"200": 4, "500": 1, "error": 1}},
		{"OK", s.OK, 3},
		{"BadBodies", s.BadBodies, 1},
		{"DistinctTokens", s.DistinctTokens, 2},
		{"DuplicatedTokens", s.DuplicatedTokens, 1},
		{"DuplicateExamples", s.DuplicateExamples, []string{"token id aaaaaa went to h0, h2"}},
		{"Latency", s.Latency, storm.Latency{P50: 30, P90: 60, P99: 60, Max: 60}},
		{"ErrorSamples", len(s.ErrorSamples), 2},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestCheckSecrets(t *testing.T) {
	secrets := map[string]Secret{
		"aaaaaa": {Name: "bootstrap-token-aaaaaa", TokenSecret: "0123456789abcdef", Host: "h0", Description: "Allow h0 to join the cluster"},
		"bbbbbb": {Name: "bootstrap-token-bbbbbb", TokenSecret: "0123456789abcdef", Host: "h1", Description: "Allow h1 to join the cluster"},
		// A listing without token-secret still identifies the token by id.
		"cccccc": {Name: "bootstrap-token-cccccc", Host: "h2", Description: "Allow h2 to join the cluster"},
	}
	tests := []struct {
		name          string
		results       []Result
		wantCrossing  int
		wantWithout   int
		wantExamples  int
		wantFirstExam string
	}{
		{
			name:    "each host its own token",
			results: []Result{{Host: "h0", Token: tokA}, {Host: "h1", Token: tokB}, {Host: "h2", Token: tokC}},
		},
		{
			name:          "swapped tokens cross twice",
			results:       []Result{{Host: "h0", Token: tokB}, {Host: "h1", Token: tokA}},
			wantCrossing:  2,
			wantExamples:  2,
			wantFirstExam: `token id bbbbbb went to h0; its Secret bootstrap-token-bbbbbb says "Allow h1 to join the cluster"`,
		},
		{
			name:        "unknown token id",
			results:     []Result{{Host: "h0", Token: "zzzzzz.0123456789abcdef"}},
			wantWithout: 1,
		},
		{
			name:        "known id, other secret half",
			results:     []Result{{Host: "h0", Token: "aaaaaa.ffffffffffffffff"}},
			wantWithout: 1,
		},
		{
			name:    "failed answers are not checked",
			results: []Result{{Host: "h0", Status: 500}, {Host: "h9", Status: 200, Err: errors.New("bad body")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CheckSecrets(tt.results, secrets)
			if got.Secrets != 3 || got.Crossing != tt.wantCrossing || got.WithoutSecret != tt.wantWithout || len(got.Examples) != tt.wantExamples {
				t.Errorf("CheckSecrets = %+v, want Secrets 3, Crossing %d, WithoutSecret %d, %d examples",
					got, tt.wantCrossing, tt.wantWithout, tt.wantExamples)
			}
			if tt.wantFirstExam != "" && (len(got.Examples) == 0 || got.Examples[0] != tt.wantFirstExam) {
				t.Errorf("first example = %q, want %q", got.Examples, tt.wantFirstExam)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name      string
		s         Summary
		requireOK bool
		want      int // number of failures
	}{
		{"clean", Summary{Machines: 2, OK: 2}, false, 0},
		{"non-200 alone passes", Summary{Machines: 2, OK: 1}, false, 0},
		{"non-200 with -require-ok fails", Summary{Machines: 2, OK: 1}, true, 1},
		{"duplicate fails", Summary{Machines: 2, OK: 2, DuplicatedTokens: 1}, false, 1},
		{"crossing fails", Summary{Machines: 2, OK: 2, Secrets: &SecretCheck{Crossing: 1}}, false, 1},
		{"without secret alone passes", Summary{Machines: 2, OK: 2, Secrets: &SecretCheck{WithoutSecret: 2}}, false, 0},
		{"everything", Summary{Machines: 3, OK: 2, DuplicatedTokens: 1, Secrets: &SecretCheck{Crossing: 2}}, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verdict(tt.s, tt.requireOK); len(got) != tt.want {
				t.Errorf("Verdict = %q, want %d failure(s)", got, tt.want)
			}
		})
	}
}

func TestStatusLine(t *testing.T) {
	tests := []struct {
		counts map[string]int
		want   string
	}{
		{map[string]int{}, ""},
		{map[string]int{"200": 3}, "200=3"},
		{map[string]int{"error": 1, "500": 2, "200": 3, "408": 4}, "200=3 408=4 500=2 error=1"},
	}
	for _, tt := range tests {
		if got := statusLine(tt.counts); got != tt.want {
			t.Errorf("statusLine(%v) = %q, want %q", tt.counts, got, tt.want)
		}
	}
}

// sortedKeys helps failure messages print maps in a stable order.
func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}
