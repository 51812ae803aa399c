package main

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// maxExamples bounds the examples a summary lists, so that a broken server
// does not print a thousand lines.
const maxExamples = 5

// Summary is everything a storm measured.
type Summary struct {
	// URL is where the requests went.
	URL string `json:"url"`
	// Machines is the number of requests sent.
	Machines int `json:"machines"`
	// WallMS runs from the release to the last answer, in milliseconds.
	WallMS float64 `json:"wall_ms"`
	// Statuses counts answers by status code; "error" counts requests that
	// got no answer.
	Statuses map[string]int `json:"statuses"`
	// ErrorSamples lists a few distinct errors, transport or body.
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Latency spans every request, answered or not.
	Latency storm.Latency `json:"latency_ms"`
	// OK counts 200 answers carrying a usable token.
	OK int `json:"ok"`
	// BadBodies counts 200 answers without a usable token.
	BadBodies int `json:"bad_bodies"`
	// DistinctTokens counts different tokens among OK answers.
	DistinctTokens int `json:"distinct_tokens"`
	// DuplicatedTokens counts tokens handed to more than one host.
	DuplicatedTokens int `json:"duplicated_tokens"`
	// DuplicateExamples names a few duplicated token ids and their hosts.
	DuplicateExamples []string `json:"duplicate_examples,omitempty"`
	// Secrets holds the check against the cluster; nil when not run.
	Secrets *SecretCheck `json:"secrets,omitempty"`
	// PeakProcesses is the most kubeadm and kubectl processes seen at once,
	// not counting their forked children; nil when /proc could not be read.
	PeakProcesses *int `json:"peak_kubeadm_kubectl_processes,omitempty"`
	// ProcessScope says whose processes PeakProcesses counts.
	ProcessScope string `json:"process_scope,omitempty"`
	// ServerPeakRSSMiB is the server's VmHWM after the storm; nil without
	// -server-pid.
	ServerPeakRSSMiB *float64 `json:"server_peak_rss_mib,omitempty"`
	// Failures says why the run failed; empty means it passed.
	Failures []string `json:"failures,omitempty"`
	// CheckErrors says which requested checks could not run.
	CheckErrors []string `json:"check_errors,omitempty"`
	// Pass is true when Failures and CheckErrors are empty.
	Pass bool `json:"pass"`
}

// SecretCheck compares the tokens handed out with the bootstrap-token
// Secrets in the cluster.
type SecretCheck struct {
	// Secrets counts bootstrap-token Secrets listed.
	Secrets int `json:"bootstrap_secrets"`
	// Crossing counts OK answers whose token's Secret names another host:
	// that machine would join under someone else's name.
	Crossing int `json:"tokens_crossing_hosts"`
	// WithoutSecret counts OK answers whose token is not in the cluster (or
	// whose secret half differs): that machine could not join at all.
	WithoutSecret int `json:"tokens_without_secret"`
	// Examples describes a few crossings.
	Examples []string `json:"crossing_examples,omitempty"`
}

// Summarize counts statuses, latencies and tokens of a storm.
func Summarize(url string, results []Result, wall time.Duration) Summary {
	s := Summary{URL: url, Machines: len(results), WallMS: storm.Ms(wall), Statuses: map[string]int{}}
	lat := make([]time.Duration, 0, len(results))
	hostsOf := map[string][]string{} // token -> hosts that received it
	var order []string               // tokens in first-seen order, for stable examples
	seenErr := map[string]bool{}
	for _, r := range results {
		lat = append(lat, r.Latency)
		key := "error"
		if r.Status != 0 {
			key = strconv.Itoa(r.Status)
		}
		s.Statuses[key]++
		if r.Err != nil && !seenErr[r.Err.Error()] && len(seenErr) < maxExamples {
			seenErr[r.Err.Error()] = true
			s.ErrorSamples = append(s.ErrorSamples, fmt.Sprintf("%s: %v", r.Host, r.Err))
		}
		if r.Status != http.StatusOK {
			continue
		}
		if r.Token == "" {
			s.BadBodies++
			continue
		}
		s.OK++
		if hostsOf[r.Token] == nil {
			order = append(order, r.Token)
		}
		if !slices.Contains(hostsOf[r.Token], r.Host) {
			hostsOf[r.Token] = append(hostsOf[r.Token], r.Host)
		}
	}
	s.Latency = storm.Summarize(lat)
	s.DistinctTokens = len(hostsOf)
	for _, tok := range order {
		if hosts := hostsOf[tok]; len(hosts) > 1 {
			s.DuplicatedTokens++
			if len(s.DuplicateExamples) < maxExamples {
				// Only the token id: the secret half stays out of logs.
				s.DuplicateExamples = append(s.DuplicateExamples,
					fmt.Sprintf("token id %s went to %s", tokenID(tok), strings.Join(hosts, ", ")))
			}
		}
	}
	return s
}

// tokenID is the public half of a token, the part named in its Secret.
func tokenID(tok string) string {
	id, _, _ := strings.Cut(tok, ".")
	return id
}

// CheckSecrets compares every OK answer with the Secret of its token, keyed
// by token id.
func CheckSecrets(results []Result, secrets map[string]Secret) SecretCheck {
	c := SecretCheck{Secrets: len(secrets)}
	for _, r := range results {
		if r.Token == "" {
			continue
		}
		id, secret, _ := strings.Cut(r.Token, ".")
		s, ok := secrets[id]
		if !ok || (s.TokenSecret != "" && s.TokenSecret != secret) {
			c.WithoutSecret++
			continue
		}
		if s.Host != r.Host {
			c.Crossing++
			if len(c.Examples) < maxExamples {
				c.Examples = append(c.Examples, fmt.Sprintf("token id %s went to %s; its Secret %s says %q",
					id, r.Host, s.Name, s.Description))
			}
		}
	}
	return c
}

// Verdict lists why a run fails: duplicated or crossing tokens always, and
// machines without a usable 200 answer when requireOK is set.
func Verdict(s Summary, requireOK bool) []string {
	var f []string
	if s.DuplicatedTokens > 0 {
		f = append(f, fmt.Sprintf("%d token(s) handed to more than one host", s.DuplicatedTokens))
	}
	if s.Secrets != nil && s.Secrets.Crossing > 0 {
		f = append(f, fmt.Sprintf("%d token(s) whose Secret names another host", s.Secrets.Crossing))
	}
	if requireOK && s.OK != s.Machines {
		f = append(f, fmt.Sprintf("%d of %d machines got no usable 200 answer", s.Machines-s.OK, s.Machines))
	}
	return f
}
