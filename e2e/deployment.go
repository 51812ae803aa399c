package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Dockerfile is what the tests read of the project's Dockerfile, so that a
// change there is what they run: how the build stage builds the server,
// and the final stage's USER, ENV and ENTRYPOINT.
type Dockerfile struct {
	// BuildEnv and BuildFlags are the build stage's `go build` line: its
	// variables (CGO_ENABLED=0) and its flags, less -o and the package.
	BuildEnv, BuildFlags []string
	// User is the final stage's USER ("uid:gid"); empty means root.
	User string
	// Env is the final stage's ENV, as KEY=VALUE.
	Env []string
	// Entrypoint is the final stage's ENTRYPOINT (exec form).
	Entrypoint []string
}

// ReadDockerfile reads path. It knows the one-line instructions the
// project's Dockerfile uses; anything it cannot read is an error, never a
// guess.
func ReadDockerfile(path string) (Dockerfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Dockerfile{}, err
	}
	var d Dockerfile
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM": // a new stage: only the last one's settings count
			d.User, d.Env, d.Entrypoint = "", nil, nil
		case "RUN":
			words := shellWords(rest)
			i := 0
			for i < len(words) && strings.Contains(words[i], "=") {
				i++
			}
			if len(words) < i+2 || words[i] != "go" || words[i+1] != "build" {
				continue
			}
			d.BuildEnv = words[:i]
			d.BuildFlags = nil
			for j := i + 2; j < len(words); j++ {
				switch {
				case words[j] == "-o":
					j++
				case words[j] == ".":
				default:
					d.BuildFlags = append(d.BuildFlags, words[j])
				}
			}
		case "USER":
			d.User = strings.TrimSpace(rest)
		case "ENV":
			for _, kv := range shellWords(rest) {
				if !strings.Contains(kv, "=") {
					return Dockerfile{}, fmt.Errorf("%s: ENV %q: only the KEY=VALUE form is read", path, rest)
				}
				d.Env = append(d.Env, kv)
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.Entrypoint); err != nil {
				return Dockerfile{}, fmt.Errorf("%s: ENTRYPOINT %s: want the exec form: %w", path, rest, err)
			}
		}
	}
	if d.BuildEnv == nil || len(d.Entrypoint) == 0 {
		return Dockerfile{}, fmt.Errorf("%s: no `go build` line or no ENTRYPOINT", path)
	}
	return d, nil
}

// shellWords splits s at blanks, keeping what double quotes hold together
// and dropping the quotes, as sh does for the simple words of a Dockerfile.
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
			}
			inWord = false
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// BuildAsDockerfile builds the server from the module at root into dir as
// the Dockerfile's build stage does (static, its flags), and returns its
// path.
func BuildAsDockerfile(root, dir string, d Dockerfile) (string, error) {
	bin := filepath.Join(dir, "epoxy-extensions-static")
	args := append(append([]string{"build"}, d.BuildFlags...), "-o", bin, ".")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), d.BuildEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v go %v: %w\n%s", d.BuildEnv, args, err, out)
	}
	return bin, nil
}

// Bind is a folder mounted read-only at Dst in the server's private mount
// namespace, as `docker run --volume Src:Dst:ro` mounts it.
type Bind struct{ Src, Dst string }

// bindMounts runs in a private mount namespace as
// `bash -c bindMounts NAME SCRATCH SRC=DST… -- COMMAND ARGS…`. It mounts
// each SRC read-only at DST, then execs COMMAND, which keeps bash's pid. A
// DST that does not exist is made inside an overlay of its parent whose
// changes go to SCRATCH, so that nothing is created on the machine. Mounts
// are made in order: one over /usr/bin must come last, since mount and
// dirname live there (one mount run binds and makes the bind read-only).
// -n keeps mount from writing /run/mount/utab.
const bindMounts = `set -e
scratch=$1
shift
n=0
while [ "$1" != "--" ]; do
	src=${1%%=*} dst=${1#*=}
	shift
	if [ ! -e "$dst" ]; then
		parent=$(dirname "$dst")
		n=$((n+1))
		mkdir -p "$scratch/$n/upper" "$scratch/$n/work"
		mount -n -t overlay e2e-overlay -o "lowerdir=$parent,upperdir=$scratch/$n/upper,workdir=$scratch/$n/work" "$parent"
		mkdir "$dst"
	fi
	mount -n --bind -o ro "$src" "$dst"
done
shift
exec "$@"`

// DeployedOptions says how to start the server as a deployment runs it.
type DeployedOptions struct {
	// Binary is the server executable.
	Binary string
	// Args are its arguments, exactly.
	Args []string
	// Env is its whole environment, exactly.
	Env []string
	// Binds are mounted, in order, in a private mount namespace.
	Binds []Bind
	// Addr is where it listens (set through Env or Args), "host:port".
	Addr string
	// Scratch is a folder for the overlays that make missing mount points.
	Scratch string
	// Output, when set, also receives the server's output.
	Output io.Writer
}

// StartDeployed starts the server as a container runtime would: as root,
// in a private mount namespace holding opts.Binds, with exactly opts.Env
// and opts.Args. It waits until GET / answers 200, or the server exits.
// Needs root.
func StartDeployed(opts DeployedOptions) (*Server, error) {
	args := append([]string{"-m", "bash", "-c", bindMounts, "e2e-deploy", opts.Scratch}, bindArgs(opts.Binds)...)
	args = append(append(args, "--", opts.Binary), opts.Args...)
	s := &Server{URL: "http://" + opts.Addr, log: &SyncBuffer{}}
	if err := s.run(opts.Output, opts.Env, nil, "unshare", args...); err != nil {
		return nil, err
	}
	return s, nil
}

func bindArgs(binds []Bind) []string {
	var a []string
	for _, b := range binds {
		a = append(a, b.Src+"="+b.Dst)
	}
	return a
}

// ProcessUser returns the real and effective uid and gid of process pid,
// from /proc.
func ProcessUser(pid int) (uid, gid string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "Uid:" {
			uid = f[1] + ":" + f[2]
		}
		if len(f) >= 3 && f[0] == "Gid:" {
			gid = f[1] + ":" + f[2]
		}
	}
	return uid, gid, nil
}
