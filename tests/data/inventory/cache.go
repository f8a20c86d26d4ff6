package main

import (
	"fmt"
	"sync"
)

// pageBytes is the size of one rendered item page.
const pageBytes = 32 << 10

// pageCache keeps the rendered pages of the most recently rendered items,
// at most capacity of them; the oldest page makes room for a new one.
// Once full it stays full, renewing entries: bounded, not a leak.
type pageCache struct {
	mu       sync.Mutex
	capacity int
	pages    map[int][]byte
	order    []int // ids, oldest first
}

func newPageCache(capacity int) *pageCache {
	return &pageCache{capacity: capacity, pages: make(map[int][]byte)}
}

// get returns the page of item id, rendering it on a miss.
func (c *pageCache) get(id int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pages[id]; ok {
		return p
	}
	p := renderPage(id)
	if len(c.order) == c.capacity {
		delete(c.pages, c.order[0])
		c.order = c.order[1:]
	}
	c.pages[id] = p
	c.order = append(c.order, id)
	return p
}

// renderPage builds the page of one item.
func renderPage(id int) []byte {
	page := make([]byte, pageBytes)
	copy(page, fmt.Sprintf("<h1>item %d</h1>", id))
	return page
}
