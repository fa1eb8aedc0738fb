package actor

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

func TestMailboxDropsWhenFull(t *testing.T) {
	m := NewMailbox[int](2, nil)
	var accepted []int
	for i := range 5 {
		if m.TrySend(i) {
			accepted = append(accepted, i)
		}
	}
	if len(accepted) != 2 || m.Dropped() != 3 || m.Len() != 2 {
		t.Fatalf("accepted=%v dropped=%d len=%d, want [0 1]/3/2", accepted, m.Dropped(), m.Len())
	}
	for _, want := range accepted {
		if got := <-m.C(); got != want {
			t.Fatalf("received %d, want %d", got, want)
		}
	}
	// Space again: accepted, and the counter does not move.
	if !m.TrySend(9) || m.Dropped() != 3 {
		t.Fatalf("send after drain refused or counted (dropped=%d)", m.Dropped())
	}
}

func TestMailboxDropsAfterStop(t *testing.T) {
	var l Lifecycle
	m := NewMailbox[string](8, l.Stopping())
	if !m.TrySend("before") {
		t.Fatal("send before stop refused")
	}
	l.Stop()
	for range 3 {
		if m.TrySend("after") { // must neither succeed nor panic
			t.Fatal("send after stop accepted")
		}
	}
	if m.Dropped() != 3 {
		t.Fatalf("dropped = %d, want 3", m.Dropped())
	}
	if m.Len() != 1 {
		t.Fatalf("len = %d, want only the message sent before stop", m.Len())
	}
}

func TestMailboxConcurrentSendersAccountForEverything(t *testing.T) {
	const senders, each, size = 16, 500, 64
	m := NewMailbox[int](size, nil)
	var accepted atomic.Uint64
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			<-gate
			for i := range each {
				if m.TrySend(i) {
					accepted.Add(1)
				}
			}
		})
	}
	close(gate)
	wg.Wait()
	if accepted.Load() != size {
		t.Fatalf("accepted = %d, want %d (no reader)", accepted.Load(), size)
	}
	if got := accepted.Load() + m.Dropped(); got != senders*each {
		t.Fatalf("accepted+dropped = %d, want %d", got, senders*each)
	}
}

func TestMailboxSendRacingStopNeverPanics(t *testing.T) {
	var l Lifecycle
	m := NewMailbox[int](4, l.Stopping())
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			<-gate
			for i := range 1000 {
				m.TrySend(i)
			}
		})
	}
	close(gate)
	l.Stop()
	wg.Wait()
	if m.TrySend(0) {
		t.Fatal("send after stop accepted")
	}
}

func TestMailboxZeroValueDrops(t *testing.T) {
	var m Mailbox[int]
	if m.TrySend(1) || m.Dropped() != 1 || m.C() != nil || m.Len() != 0 {
		t.Fatal("zero Mailbox must drop and count, with a nil C")
	}
}

func TestMailboxUnbufferedNeedsWaitingReceiver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMailbox[int](0, nil)
		if m.TrySend(1) {
			t.Fatal("unbuffered send with no receiver accepted")
		}
		got := make(chan int)
		go func() { got <- <-m.C() }()
		synctest.Wait() // the receiver is now parked on C
		if !m.TrySend(2) {
			t.Fatal("unbuffered send with a waiting receiver refused")
		}
		if v := <-got; v != 2 || m.Dropped() != 1 {
			t.Fatalf("received %d, dropped %d; want 2, 1", v, m.Dropped())
		}
	})
}

func BenchmarkTrySend(b *testing.B) {
	b.Run("accept", func(b *testing.B) {
		m, stop := drainedMailbox(b)
		defer stop()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m.TrySend(i)
		}
	})
	b.Run("full", func(b *testing.B) {
		m := fullMailbox()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m.TrySend(i)
		}
	})
	b.Run("stopped", func(b *testing.B) {
		stop := make(chan struct{})
		close(stop)
		m := NewMailbox[int](1024, stop)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m.TrySend(i)
		}
	})
}

func BenchmarkTrySendParallel(b *testing.B) {
	b.Run("accept", func(b *testing.B) {
		m, stop := drainedMailbox(b)
		defer stop()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				m.TrySend(i)
			}
		})
	})
	b.Run("full", func(b *testing.B) {
		m := fullMailbox()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				m.TrySend(i)
			}
		})
	})
}

// drainedMailbox returns a mailbox with a reader emptying it, so most sends
// are accepted; stop ends the reader and waits for it.
func drainedMailbox(b *testing.B) (*Mailbox[int], func()) {
	b.Helper()
	var l Lifecycle
	m := NewMailbox[int](1024, l.Stopping())
	if err := l.Start(func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case <-m.C():
			}
		}
	}); err != nil {
		b.Fatal(err)
	}
	return m, l.Stop
}

func fullMailbox() *Mailbox[int] {
	m := NewMailbox[int](16, nil)
	for m.TrySend(0) {
	}
	return m
}
