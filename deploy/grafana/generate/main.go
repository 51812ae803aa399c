// Command generate writes the Grafana dashboard that package grafana builds
// to deploy/grafana/epoxy-extension-server.json (or the file named by -o).
//
//	go run ./deploy/grafana/generate
package main

import (
	"flag"
	"log"
	"os"
	"path/filepath"

	"github.com/m-lab/epoxy-extensions/deploy/grafana"
)

var out = flag.String("o", filepath.Join("deploy", "grafana", grafana.File), "File to write the dashboard to.")

func main() {
	flag.Parse()
	b, err := grafana.JSON()
	if err != nil {
		log.Fatalf("building the dashboard: %v", err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		log.Fatal(err)
	}
}
