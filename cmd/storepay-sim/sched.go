package main

import (
	"fmt"
	"time"
)

// The scheduler runs actors (terminals' requests, the workers' passes,
// terminal and manager scripts) one at a time. Each actor is a goroutine
// that runs the real storepay code; it hands control back at the points
// where the world can change under it (a bank call about to be sent, a
// bank's answer on its way back, a script waiting for an answer or for
// time to pass) and when it ends. Which actor runs next, and what happens
// meanwhile, is drawn from the seed: the interleavings are the seed's,
// and replay exactly.
type sched struct {
	sig    chan *actor // an actor handed control back
	actors []*actor    // alive, in start order
	next   int
	cur    *actor
}

// actor is one goroutine of the simulated world.
type actor struct {
	id    int
	name  string
	inc   *incarnation // the storepay process it runs in (nil for scripts)
	wake  chan struct{}
	ended bool
	// at says what the actor waits for while parked.
	at    string
	until time.Time // a script's timed wait
	// ready, when set, says whether a parked script may go on.
	ready  func() bool
	script bool
	// request: the actor serves one terminal request, all of whose bank
	// calls share its budget (the request's context deadline);
	// firstSend is when the first of them was about to leave.
	request   bool
	firstSend time.Time
}

func newSched() *sched { return &sched{sig: make(chan *actor)} }

// watchdog bounds how long one actor may run without handing control
// back: an actor that blocks on anything but the scheduler is a bug of
// the simulator or of storepay (a deadlock), reported with its seed.
const watchdog = 30 * time.Second

// spawn makes an actor that will run fn when first resumed.
func (s *sched) spawn(name string, inc *incarnation, script bool, fn func()) *actor {
	s.next++
	a := &actor{id: s.next, name: name, inc: inc, wake: make(chan struct{}), script: script, at: "start"}
	s.actors = append(s.actors, a)
	go func() {
		<-a.wake
		defer func() {
			a.ended = true
			s.sig <- a
		}()
		fn()
	}()
	return a
}

// resume runs a until it parks again or ends.
func (s *sched) resume(a *actor) {
	s.cur = a
	a.ready = nil
	a.wake <- struct{}{}
	select {
	case got := <-s.sig:
		if got != a {
			panic(fmt.Sprintf("simulator: %s handed control back while %s ran", got.name, a.name))
		}
	case <-time.After(watchdog):
		panic(fmt.Sprintf("simulator: %s neither parked nor ended within %s (parked at %q): a deadlock", a.name, watchdog, a.at))
	}
	s.cur = nil
	if a.ended {
		s.remove(a)
	}
}

func (s *sched) remove(a *actor) {
	for i, b := range s.actors {
		if b == a {
			s.actors = append(s.actors[:i], s.actors[i+1:]...)
			return
		}
	}
}

// park hands control back from the running actor and waits to be
// resumed. Only the running actor may park.
func (s *sched) park(a *actor, at string) {
	a.at = at
	s.sig <- a
	<-a.wake
}

// runNow runs fn as an actor to its end before anything else happens
// (set-up steps): it must not park.
func (s *sched) runNow(w *world, name string, fn func() error) error {
	var err error
	a := s.spawn(name, w.inc, false, func() { err = fn() })
	s.resume(a)
	if !a.ended {
		return fmt.Errorf("simulator: %s parked during set-up", name)
	}
	return err
}

// runnable lists the parked actors that may go on now.
func (s *sched) runnable(now time.Time) []*actor {
	var out []*actor
	for _, a := range s.actors {
		switch {
		case a.ready != nil && !a.ready():
		case !a.until.IsZero() && now.Before(a.until):
		default:
			out = append(out, a)
		}
	}
	return out
}

// finishDead runs every actor of a dead incarnation to its end: each
// finds its process gone at its next bank call or write and stops.
func (s *sched) finishDead(w *world, inc *incarnation) {
	for guard := 0; ; guard++ {
		var a *actor
		for _, b := range s.actors {
			if b.inc == inc {
				a = b
				break
			}
		}
		if a == nil {
			return
		}
		if guard > 10000 {
			panic("simulator: a dead incarnation's actors do not end")
		}
		s.resume(a)
	}
}

// earliest is the soonest time a timed wait ends, or the zero time.
func (s *sched) earliest() time.Time {
	var t time.Time
	for _, a := range s.actors {
		if !a.until.IsZero() && (t.IsZero() || a.until.Before(t)) {
			t = a.until
		}
	}
	return t
}
