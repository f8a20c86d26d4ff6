// inventory is a small stock service that misbehaves under load, for
// leakscope's end-to-end test of naming a Go service's leaks
// (tests/sidecar_go_naming.rs). Three routes, each with its own fate:
//
//   - POST /reserve?sku=S parks a goroutine until S is restocked, and no
//     restock ever comes (restock.go): goroutines pile up.
//   - POST /items?name=N records an item, with its spec sheet, in a catalog
//     nothing ever prunes (catalog.go): the heap grows.
//   - GET /items/N renders item N through a bounded cache (cache.go): it
//     fills, then renews its entries; it is not a leak.
//
// The leakscope load generator sends GETs only, so the two POST routes
// take GET as well. net/http/pprof is served beside them, with the
// runtime's default sampling rates.
//
// Usage: inventory [-addr 127.0.0.1:0]; prints "inventory on http://ADDR".
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()

	shop := newShop()
	http.HandleFunc("/reserve", shop.reserve)
	http.HandleFunc("/items", shop.addItem)
	http.HandleFunc("/items/", shop.showItem)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("inventory: %v", err)
	}
	// The test reads this line for the address.
	log.SetFlags(0)
	log.SetOutput(stdout{})
	log.Printf("inventory on http://%s", ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
