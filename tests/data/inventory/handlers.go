package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// shop holds the service's state behind its handlers.
type shop struct {
	holds *restockBook
	pages *pageCache
}

func newShop() *shop {
	return &shop{
		holds: newRestockBook(),
		pages: newPageCache(128),
	}
}

// writeOnly answers 405 unless the method changes state (GET is taken too,
// for load generators that only send GETs).
func writeOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		w.Header().Set("Allow", "POST, GET")
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return false
	}
	return true
}

// reserve holds one unit of a SKU for the caller until it is restocked.
func (s *shop) reserve(w http.ResponseWriter, r *http.Request) {
	if !writeOnly(w, r) {
		return
	}
	sku := r.URL.Query().Get("sku")
	if sku == "" {
		sku = "default"
	}
	id, restocked := s.holds.open(sku)
	go awaitRestock(id, sku, restocked)
	fmt.Fprintf(w, "reservation %d for %s waits for restock\n", id, sku)
}

// addItem puts a new item into the catalog.
func (s *shop) addItem(w http.ResponseWriter, r *http.Request) {
	if !writeOnly(w, r) {
		return
	}
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "unnamed"
	}
	n := recordItem(name)
	fmt.Fprintf(w, "item %d recorded: %s\n", n, name)
}

// showItem renders /items/N from the page cache.
func (s *shop) showItem(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/items/"))
	if err != nil || id < 0 {
		http.Error(w, "want /items/N with N >= 0", http.StatusBadRequest)
		return
	}
	page := s.pages.get(id)
	fmt.Fprintf(w, "item %d: %d bytes of page\n", id, len(page))
}

// stdout lets the log package print the address line to standard output.
type stdout struct{}

func (stdout) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
