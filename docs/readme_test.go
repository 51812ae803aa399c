package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"
)

// flagsOf returns the names of the flags that file declares with the flag
// package (flag.String("name", …) and the like).
func flagsOf(t *testing.T, file string) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "flag" {
			return true
		}
		if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if name, err := strconv.Unquote(lit.Value); err == nil {
				flags[name] = true
			}
		}
		return true
	})
	return flags
}

// flagRow matches a row of the README's flags table: | `-name` | …
var flagRow = regexp.MustCompile("(?m)^\\| `-([a-z0-9-]+)` \\|")

// TestREADMEFlags checks that the README's flags table lists every flag
// main.go declares, and no other.
func TestREADMEFlags(t *testing.T) {
	want := flagsOf(t, "../main.go")
	if len(want) < 10 {
		t.Fatalf("found %d flags in main.go, want its every flag: is the parser looking at the right calls?", len(want))
	}
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range flagRow.FindAllStringSubmatch(string(b), -1) {
		got[m[1]] = true
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if !got[name] {
			t.Errorf("README.md's flags table has no row for -%s", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if !want[name] {
			t.Errorf("README.md's flags table lists -%s, which main.go does not declare", name)
		}
	}
}
