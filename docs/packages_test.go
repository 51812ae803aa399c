package docs

import (
	"bufio"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const project = "github.com/m-lab/epoxy-extensions"

// listed returns, for every package of the four modules, its imports from
// the project (tests excluded), both without the project's prefix; the root
// package is ".".
func listed(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}`,
		"./...", "./deploy/...", "./e2e/...", "./loadtest/...")
	cmd.Dir = ".."
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		path, imports, _ := strings.Cut(strings.TrimSpace(line), "|")
		var own []string
		for _, imp := range strings.Fields(imports) {
			if rel, ok := strings.CutPrefix(imp, project+"/"); ok {
				own = append(own, rel)
			}
		}
		slices.Sort(own)
		pkgs[relative(path)] = own
	}
	return pkgs
}

func relative(path string) string {
	if path == project {
		return "."
	}
	return strings.TrimPrefix(path, project+"/")
}

// documented returns the rows of packages.md's tables: package, and the
// packages its last column names.
func documented(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("packages.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue // not a table row, or the header
		}
		name, _, _ := strings.Cut(strings.Trim(strings.TrimSpace(cells[1]), "`"), "`")
		var imports []string
		for _, f := range strings.Split(cells[len(cells)-2], ",") {
			if f = strings.Trim(strings.TrimSpace(f), "`"); f != "" && f != "—" {
				imports = append(imports, f)
			}
		}
		slices.Sort(imports)
		if _, dup := rows[name]; dup {
			t.Errorf("packages.md lists %s twice", name)
		}
		rows[name] = imports
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestPackagesTable checks that packages.md lists every package of the
// four modules, and nothing else, each with exactly its imports from the
// project.
func TestPackagesTable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over every module")
	}
	want := listed(t)
	got := documented(t)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		imports, ok := got[name]
		if !ok {
			t.Errorf("packages.md has no row for %s (imports %q)", name, want[name])
			continue
		}
		if !slices.Equal(imports, want[name]) {
			t.Errorf("packages.md: %s imports %q, the code %q", name, imports, want[name])
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("packages.md lists %s, which is no package", name)
		}
	}
}
