// goleaky is a Go service that leaks on purpose, for leakscope's sidecar
// tests: each request to a /leak/ route leaks one goroutine, one file
// descriptor or some heap, from one named function, and the standard
// net/http/pprof endpoints are served beside them.
//
// Usage: goleaky [-addr 127.0.0.1:0]; it prints "listening on http://ADDR".
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"sync"
)

var (
	mu    sync.Mutex
	kept  [][]byte
	files []*os.File
	never = make(chan struct{})
)

// leakHeap keeps kb KiB alive forever.
//
//go:noinline
func leakHeap(kb int) {
	b := make([]byte, kb*1024)
	for i := range b {
		b[i] = 0x5a
	}
	mu.Lock()
	kept = append(kept, b)
	mu.Unlock()
}

// parkForever is the body of every leaked goroutine.
//
//go:noinline
func parkForever() {
	<-never
}

// leakFD opens /dev/null and never closes it.
func leakFD() error {
	f, err := os.Open("/dev/null")
	if err != nil {
		return err
	}
	mu.Lock()
	files = append(files, f)
	mu.Unlock()
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	// Sample every 4 KiB on average, so short tests see the leak clearly.
	runtime.MemProfileRate = 4096

	http.HandleFunc("/leak/heap", func(w http.ResponseWriter, r *http.Request) {
		kb, err := strconv.Atoi(r.URL.Query().Get("kb"))
		if err != nil || kb <= 0 {
			kb = 64
		}
		leakHeap(kb)
		// The heap profile shows the state as of the last GC.
		runtime.GC()
		fmt.Fprintf(w, "leaked %d KiB\n", kb)
	})
	http.HandleFunc("/leak/goroutine", func(w http.ResponseWriter, r *http.Request) {
		go parkForever()
		fmt.Fprintln(w, "leaked a goroutine")
	})
	http.HandleFunc("/leak/fd", func(w http.ResponseWriter, r *http.Request) {
		if err := leakFD(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "leaked an fd")
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "goleaky:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "goleaky:", err)
		os.Exit(1)
	}
}
