package main

import (
	"log"
	"sync"
)

// restockBook keeps, per open reservation, the channel its waiter listens
// on for the restock notice.
type restockBook struct {
	mu      sync.Mutex
	next    int
	waiting map[int]chan int
}

func newRestockBook() *restockBook {
	return &restockBook{waiting: make(map[int]chan int)}
}

// open registers a reservation and returns its id and its channel.
func (b *restockBook) open(sku string) (int, chan int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	ch := make(chan int)
	b.waiting[b.next] = ch
	return b.next, ch
}

// awaitRestock waits for the restock notice of one reservation. Nothing
// in this service ever sends one, nor closes the channel: every
// reservation's goroutine waits here for good.
func awaitRestock(id int, sku string, restocked <-chan int) {
	qty := <-restocked
	log.Printf("reservation %d: %d of %s back in stock", id, qty, sku)
}
