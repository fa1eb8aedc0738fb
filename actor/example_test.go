package actor_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/reroute-go/reroute/actor"
)

type counter struct {
	life   actor.Lifecycle
	events *actor.Mailbox[string]
	asks   chan actor.Request[string, int]
}

func newCounter() (*counter, error) {
	c := &counter{asks: make(chan actor.Request[string, int])}
	c.events = actor.NewMailbox[string](64, c.life.Stopping())
	return c, c.life.Start(c.loop)
}

func (c *counter) loop(stop <-chan struct{}) {
	counts := map[string]int{}
	for {
		select {
		case <-stop:
			return
		case name := <-c.events.C():
			counts[name]++
		case req := <-c.asks:
			// select picks among ready cases at random, so drain the
			// mailbox first: every Tell accepted before this Ask is then
			// reflected in the answer.
			for drained := false; !drained; {
				select {
				case name := <-c.events.C():
					counts[name]++
				default:
					drained = true
				}
			}
			req.Respond(counts[req.Q])
		}
	}
}

func (c *counter) count(ctx context.Context, name string) (int, error) {
	return actor.Ask(ctx, c.asks, c.life.Done(), name)
}

func Example() {
	c, err := newCounter()
	if err != nil {
		panic(err)
	}
	c.events.TrySend("a")
	c.events.TrySend("a")
	c.events.TrySend("b")

	ctx := context.Background()
	n, err := c.count(ctx, "a")
	fmt.Println("a:", n, err)

	c.life.Stop()
	fmt.Println("tell after stop accepted:", c.events.TrySend("a"))
	_, err = c.count(ctx, "a")
	fmt.Println("ask after stop:", errors.Is(err, actor.ErrStopped))
	// Output:
	// a: 2 <nil>
	// tell after stop accepted: false
	// ask after stop: true
}
