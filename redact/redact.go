// Package redact removes the secrets the server handles from text before
// it is logged or put in an error: bootstrap token secrets and control-plane
// certificate keys, wherever they stand. kubeadm prints them, and so may
// any output or error that quotes it.
package redact

import "regexp"

var secrets = []struct {
	re   *regexp.Regexp
	with string
}{
	// Bootstrap tokens, "abcdef.0123456789abcdef", wherever they stand,
	// even inside a longer word: keep the public id.
	{regexp.MustCompile(`([a-z0-9]{6})\.[a-z0-9]{16}`), "$1.<redacted>"},
	// Control-plane certificate keys.
	{regexp.MustCompile(`(--certificate-key[=\s]+)\S+`), "$1<redacted>"},
}

// String returns s with bootstrap token secrets and certificate keys replaced,
// so that a program's output can be logged.
func String(s string) string {
	for _, r := range secrets {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return s
}
