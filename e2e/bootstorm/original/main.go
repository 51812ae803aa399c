// Command original stands in for M-Lab's original epoxy-extensions token
// server in bootstorm: it does the original's whole work for each token
// request, one `kubeadm token create --ttl 5m --description "Allow HOST to
// join the cluster" --print-join-command` run, as many at once as requests
// arrive (the original bounds nothing), and answers the join details as JSON.
// It has none of the original's own defects (its shared state handed tokens
// to the wrong host): only its cost. It logs one JSON line per token request
// with the fields bootstorm reads from the real server's log.
//
//	original -listen-address 127.0.0.1:PORT -kubeconfig admin.conf -bin-dir DIR [other flags, ignored]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

func main() {
	fs := flag.NewFlagSet("original", flag.ContinueOnError)
	addr := fs.String("listen-address", "127.0.0.1:8800", "Address to listen on.")
	kubeconfig := fs.String("kubeconfig", "", "Kubeconfig passed to kubeadm.")
	binDir := fs.String("bin-dir", "/usr/bin", "Folder holding kubeadm.")
	// The real server's flags that bootstorm passes to every target.
	fs.String("kube-backend", "", "Ignored.")
	fs.String("max-tokens-per-host", "", "Ignored.")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ePoxy Extensions") })
	token := func(endpoint string, v2 bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			status := serveToken(w, r, filepath.Join(*binDir, "kubeadm"), *kubeconfig, v2)
			log.Info("request", "endpoint", endpoint, "status", status, "duration_seconds", time.Since(start).Seconds())
		}
	}
	mux.HandleFunc("POST /v1/allocate_k8s_token", token("allocate_k8s_token_v1", false))
	mux.HandleFunc("POST /v2/allocate_k8s_token", token("allocate_k8s_token_v2", true))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("listen", "error", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Error("serve", "error", err)
		os.Exit(1)
	}
}

// serveToken runs kubeadm for the request's host and answers the join
// details, returning the status.
func serveToken(w http.ResponseWriter, r *http.Request, kubeadm, kubeconfig string, v2 bool) int {
	var req struct {
		V1 *struct {
			Hostname string `json:"hostname"`
		} `json:"v1"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.V1 == nil {
		w.WriteHeader(http.StatusBadRequest)
		return http.StatusBadRequest
	}
	args := []string{"token", "create", "--ttl", "5m", "--description",
		fmt.Sprintf("Allow %s to join the cluster", req.V1.Hostname), "--print-join-command"}
	if kubeconfig != "" {
		args = append(args, "--kubeconfig", kubeconfig)
	}
	out, err := exec.CommandContext(r.Context(), kubeadm, args...).Output()
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	join, err := joincmd.Parse(string(out))
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	if !v2 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, join.Token)
		return http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(join)
	return http.StatusOK
}
