package node

// ValidName reports whether name is a lowercase DNS name as RFC 1123 and
// Kubernetes node names define it, the only kind of hostname the server
// accepts: at most 253 characters, dot-separated
// labels of 1 to 63 characters from [a-z0-9-], none starting or ending with
// '-'. Such a name can never be read as a command-line flag.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 || name[i-1] == '-' {
				return false
			}
			label = 0
			continue
		case c == '-':
			if label == 0 {
				return false
			}
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0 && name[len(name)-1] != '-'
}
