package redact

import "testing"

func TestRedact(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "empty",
			in:   "",
			want: "",
		},
		{
			name: "nothing secret is unchanged",
			in:   `error: couldn't reach "https://10.0.0.1:6443" for mlab1-lga01.mlab-oti.measurement-lab.org`,
			want: `error: couldn't reach "https://10.0.0.1:6443" for mlab1-lga01.mlab-oti.measurement-lab.org`,
		},
		{
			name: "bare token keeps its public id",
			in:   "abcdef.0123456789abcdef",
			want: "abcdef.<redacted>",
		},
		{
			name: "token in a join command",
			in: "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef " +
				"--discovery-token-ca-cert-hash sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \n",
			want: "kubeadm join 10.0.0.1:6443 --token abcdef.<redacted> " +
				"--discovery-token-ca-cert-hash sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \n",
		},
		{
			name: "token after = and in quotes",
			in:   `--token=abcdef.0123456789abcdef token "a1b2c3.z9y8x7w6v5u4t3s2"`,
			want: `--token=abcdef.<redacted> token "a1b2c3.<redacted>"`,
		},
		{
			name: "every token in the text",
			in:   "abcdef.0123456789abcdef\nuvwxyz.0123456789uvwxyz",
			want: "abcdef.<redacted>\nuvwxyz.<redacted>",
		},
		{
			name: "certificate key, space form",
			in:   "--control-plane --certificate-key 1a2b3c4d5e6f --token abcdef.0123456789abcdef",
			want: "--control-plane --certificate-key <redacted> --token abcdef.<redacted>",
		},
		{
			name: "certificate key, = form",
			in:   "--certificate-key=1a2b3c4d5e6f\n",
			want: "--certificate-key=<redacted>\n",
		},
		{
			name: "token inside a longer word",
			in:   "token_abcdef.0123456789abcdefX",
			want: "token_abcdef.<redacted>X",
		},
		{
			name: "certificate key, tab form",
			in:   "--certificate-key\t1a2b3c4d5e6f",
			want: "--certificate-key\t<redacted>",
		},
		{
			name: "public token id alone is kept",
			in:   `secrets "bootstrap-token-abcdef" not found`,
			want: `secrets "bootstrap-token-abcdef" not found`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := String(tc.in); got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
