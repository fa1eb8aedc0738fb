package actor

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// echoActor doubles every query until stopped.
func echoActor(t testing.TB, inboxSize int) (chan Request[int, int], *Lifecycle) {
	t.Helper()
	inbox := make(chan Request[int, int], inboxSize)
	l := new(Lifecycle)
	if err := l.Start(func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case req := <-inbox:
				req.Respond(req.Q * 2)
			}
		}
	}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(l.Stop)
	return inbox, l
}

func TestAskReturnsReply(t *testing.T) {
	ctx := testContext(t)
	inbox, l := echoActor(t, 0)
	for i := range 100 {
		got, err := Ask(ctx, inbox, l.Done(), i)
		if err != nil || got != 2*i {
			t.Fatalf("Ask(%d) = %d, %v; want %d, nil", i, got, err, 2*i)
		}
	}
}

func TestAskCancelledContext(t *testing.T) {
	inbox, l := echoActor(t, 4)
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	if _, err := Ask(ctx, inbox, l.Done(), 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ask = %v, want context.Canceled", err)
	}
	if len(inbox) != 0 {
		t.Fatal("Ask with a dead context still sent the request")
	}
}

func TestAskContextEndsWhileWaitingForReply(t *testing.T) {
	ctx := testContext(t)
	inbox := make(chan Request[int, int])
	var l Lifecycle
	received := make(chan Request[int, int])
	if err := l.Start(func(stop <-chan struct{}) {
		// Accept but never answer.
		select {
		case req := <-inbox:
			received <- req
		case <-stop:
		}
		<-stop
	}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer l.Stop()

	askCtx, cancel := context.WithCancel(ctx)
	result := make(chan error, 1)
	go func() {
		_, err := Ask(askCtx, inbox, l.Done(), 7)
		result <- err
	}()
	var req Request[int, int]
	select {
	case req = <-received:
	case <-ctx.Done():
		t.Fatalf("request never arrived: %v", ctx.Err())
	}
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Ask = %v, want context.Canceled", err)
		}
	case <-ctx.Done():
		t.Fatalf("Ask did not return after cancel: %v", ctx.Err())
	}
	// The actor answering an abandoned request must not block.
	if !req.Respond(1) {
		t.Fatal("first Respond to an abandoned request was refused")
	}
}

func TestAskDeadlineWhileActorBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inbox := make(chan Request[int, int]) // nobody ever reads it
		done := make(chan struct{})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		_, err := Ask(ctx, inbox, done, 1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ask = %v, want DeadlineExceeded", err)
		}
		if el := time.Since(start); el != time.Second {
			t.Fatalf("Ask returned after %v, want exactly 1s of fake time", el)
		}
	})
}

func TestAskAfterStop(t *testing.T) {
	for _, size := range []int{0, 8} {
		inbox, l := echoActor(t, size)
		l.Stop()
		// The context is still live, so only done can end this Ask; a hang
		// would surface as DeadlineExceeded, not ErrStopped.
		_, err := Ask(testContext(t), inbox, l.Done(), 1)
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("inbox %d: Ask after Stop = %v, want ErrStopped", size, err)
		}
		if len(inbox) != 0 {
			t.Fatalf("inbox %d: Ask after Stop left a request in the inbox", size)
		}
	}
}

func TestAskActorStopsWithoutAnswering(t *testing.T) {
	ctx := testContext(t)
	inbox := make(chan Request[int, int])
	var l Lifecycle
	received := make(chan struct{})
	if err := l.Start(func(stop <-chan struct{}) {
		<-inbox // drop the request on the floor
		close(received)
		<-stop
	}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	result := make(chan error, 1)
	go func() {
		_, err := Ask(ctx, inbox, l.Done(), 1)
		result <- err
	}()
	waitClosed(ctx, t, received, "request received")
	l.Stop()
	select {
	case err := <-result:
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("Ask = %v, want ErrStopped", err)
		}
	case <-ctx.Done():
		t.Fatalf("Ask hung after Stop: %v", ctx.Err())
	}
}

func TestAskAnswerBeforeExitWins(t *testing.T) {
	// The actor answers and immediately returns, so Reply and done are ready
	// together; the answer must win every time, not half the time.
	ctx := testContext(t)
	for i := range 200 {
		inbox := make(chan Request[int, int])
		var l Lifecycle
		if err := l.Start(func(<-chan struct{}) {
			req := <-inbox
			req.Respond(req.Q + 1)
		}); err != nil {
			t.Fatalf("Start: %v", err)
		}
		got, err := Ask(ctx, inbox, l.Done(), i)
		if err != nil || got != i+1 {
			t.Fatalf("round %d: Ask = %d, %v; want %d, nil", i, got, err, i+1)
		}
		l.Stop()
	}
}

func TestRespondKeepsFirstAnswerOnly(t *testing.T) {
	req := NewRequest[string, int]("q")
	if !req.Respond(1) {
		t.Fatal("first Respond refused")
	}
	if req.Respond(2) {
		t.Fatal("second Respond accepted; it would block an unbuffered reply")
	}
	if got := <-req.Reply; got != 1 {
		t.Fatalf("reply = %d, want 1", got)
	}
	var zero Request[string, int]
	if zero.Respond(3) {
		t.Fatal("Respond on a zero Request reported success")
	}
}

func BenchmarkAsk(b *testing.B) {
	ctx := context.Background()
	inbox, l := echoActor(b, 0)
	done := l.Done()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := Ask(ctx, inbox, done, i); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAskParallel(b *testing.B) {
	ctx := context.Background()
	inbox, l := echoActor(b, 64)
	done := l.Done()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if _, err := Ask(ctx, inbox, done, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
