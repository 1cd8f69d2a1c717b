// A registry that serves the OCI 1.1 Referrers API, for privatize's tests:
// go-containerregistry's in-memory pkg/registry with WithReferrersSupport.
// distribution (the testbed's other registries) does not serve that API.
//
// It listens on -addr (default 127.0.0.1 and a free port), prints the
// address it got as its first line on stdout, and serves plain HTTP until
// it is killed. Nothing is kept on disk.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only in tests)")
	referrers := flag.Bool("referrers", true, "serve the OCI 1.1 Referrers API")
	verbose := flag.Bool("v", false, "log every request to stderr")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listening on %s: %v", *addr, err)
	}
	fmt.Println(ln.Addr().String())
	os.Stdout.Sync()

	logger := log.New(io.Discard, "", 0)
	if *verbose {
		logger = log.New(os.Stderr, "registry: ", log.LstdFlags)
	}
	handler := registry.New(registry.WithReferrersSupport(*referrers), registry.Logger(logger))
	log.Fatal(http.Serve(ln, handler))
}
