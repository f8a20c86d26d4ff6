//go:build ignore

// shapes prints a goroutine dump (debug=2) holding the shapes the
// sidecar's parser must read: waits of several kinds, a goroutine locked
// to its thread, one parked for minutes, inlined frames, a stack too deep
// to print whole, and generic functions. Its output is the fixture
// shapes.debug2.txt (Go 1.19 here); regenerate with
//
//	go run shapes.go > shapes.debug2.txt
//
// which takes a little over a minute (for the "N minutes" marks).
package main

import (
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"
)

var (
	mu    sync.Mutex
	cond  = sync.NewCond(&mu)
	group sync.WaitGroup
	never = make(chan struct{})
)

func parkOnChannel() { <-never }

func parkInSelect(tick <-chan time.Time) {
	select {
	case <-never:
	case <-tick:
	}
}

func lockedToThread() {
	runtime.LockOSThread()
	<-never
}

func waitForGroup() { group.Wait() }

func waitOnCond() {
	mu.Lock()
	for {
		cond.Wait()
	}
}

func descend(depth int) {
	if depth == 0 {
		<-never
		return
	}
	descend(depth - 1)
}

type box[T any] struct{ v T }

func holdBox[T any](b box[T]) {
	<-never
	_ = b
}

func main() {
	group.Add(1)
	go parkOnChannel()
	go parkOnChannel()
	go parkInSelect(time.NewTicker(time.Hour).C)
	go lockedToThread()
	go waitForGroup()
	go waitOnCond()
	go descend(200)
	go holdBox(box[int]{v: 1})
	go func() { time.Sleep(time.Hour) }()
	// Collections note when the parked ones were first seen waiting (the
	// second one records the first one's time), for the "N minutes" marks
	// a minute later.
	time.Sleep(100 * time.Millisecond)
	runtime.GC()
	runtime.GC()
	time.Sleep(61 * time.Second)
	pprof.Lookup("goroutine").WriteTo(os.Stdout, 2)
}
