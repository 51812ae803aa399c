package hostname

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/m-lab/go/host"
)

// BMC names the BMC of one M-Lab machine.
type BMC struct {
	// Hostname is the BMC's name: the machine's with mlabN replaced by mlabNd.
	Hostname string
	// Project is the Google Cloud project named in the hostname.
	Project string
}

// ErrResolve means the BMC's name did not resolve to an address.
var ErrResolve = errors.New("cannot resolve BMC")

// ErrNotMachine means a hostname is not that of an M-Lab physical machine,
// which is the only kind that has a BMC.
var ErrNotMachine = errors.New("not an M-Lab machine name")

// v1Machine finds the machine and site at the end of a v1 name, dashed
// (ndt-iupui-mlab1-lga01.measurement-lab.org) or dotted
// (mlab1.lga01.measurement-lab.org), as github.com/m-lab/go/host does.
var v1Machine = regexp.MustCompile(`(^|[-.])(mlab[1-4])([-.][a-z]{3}[0-9tc]{2}\.measurement-lab\.org)$`)

// ParseBMC derives the BMC of the machine named name, as M-Lab's original
// server did: the name with the machine mlabN replaced by mlabNd, in the
// project the name gives. It accepts the physical-machine names
// github.com/m-lab/go/host parses: v2 names, with or without a service
// prefix (mlab1-lga01.mlab-oti.measurement-lab.org →
// mlab1d-lga01.mlab-oti.measurement-lab.org in project mlab-oti), and v1
// names (mlab1.lga01.measurement-lab.org → mlab1d.lga01.measurement-lab.org),
// which name no project: the store needs one of its own for them. Unlike the
// original, it replaces the machine where the name format puts it, not its
// first occurrence, and refuses names that have no BMC: virtual machines
// (an instance-group suffix), v3 (autojoin) names, BMC names themselves and
// "third-party".
func ParseBMC(name string) (BMC, error) {
	p, err := host.Parse(name)
	if err != nil {
		return BMC{}, fmt.Errorf("%w: %w", ErrNotMachine, err)
	}
	if !machineRE.MatchString(p.Machine) || p.Suffix != "" {
		return BMC{}, fmt.Errorf("%w: %s has no BMC", ErrNotMachine, name)
	}
	switch p.Version {
	case "v2":
		// <machine>-<site> or <service>-<machine>-<site>, then the project.
		first, rest, _ := strings.Cut(name, ".")
		labels := strings.Split(first, "-")
		labels[len(labels)-2] += "d"
		return BMC{Hostname: strings.Join(labels, "-") + "." + rest, Project: p.Project}, nil
	case "v1":
		if !v1Machine.MatchString(name) {
			return BMC{}, fmt.Errorf("%w: %s", ErrNotMachine, name)
		}
		return BMC{Hostname: v1Machine.ReplaceAllString(name, "${1}${2}d${3}")}, nil
	}
	return BMC{}, fmt.Errorf("%w: %s has no BMC", ErrNotMachine, name)
}

var machineRE = regexp.MustCompile(`^mlab[1-4]$`)
