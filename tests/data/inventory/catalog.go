package main

import "sync"

// specSheetBytes is the size of the spec sheet kept with every item.
const specSheetBytes = 64 << 10

// item is one catalog entry.
type item struct {
	name string
	spec []byte
}

var (
	catalogMu sync.Mutex
	// catalog holds every item ever recorded; nothing removes any.
	catalog []*item
)

// recordItem appends an item with its spec sheet to the catalog and
// returns the catalog's size.
func recordItem(name string) int {
	it := &item{name: name, spec: make([]byte, specSheetBytes)}
	copy(it.spec, name)
	catalogMu.Lock()
	defer catalogMu.Unlock()
	catalog = append(catalog, it)
	return len(catalog)
}
