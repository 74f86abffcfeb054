package web

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Refused console sign-ins are throttled per client address. A manager
// token carries 256 bits, so guessing one is hopeless anyway; the guard
// keeps a guesser from trying at the network's speed and makes the
// attempt loud in the log. After signinMaxFails refused tokens within
// signinWindow, the address is refused without the token being looked at
// until the window ends. A terminal's token is not a guess (its holder
// knows it is valid) and does not count; a sign-in that succeeds clears
// its address.
//
// Behind a reverse proxy every browser shares the proxy's address, so
// ten mistyped tokens there hold every manager off for five minutes:
// the price of not trusting a forwarded-for header anyone can write.
const (
	signinMaxFails = 10
	signinWindow   = 5 * time.Minute
	// signinMaxAddrs bounds the guard's memory; past it, the addresses
	// whose window has ended are forgotten first.
	signinMaxAddrs = 4096
)

type signinGuard struct {
	mu    sync.Mutex
	fails map[string]signinFails
}

type signinFails struct {
	n     int
	first time.Time
}

func newSigninGuard() *signinGuard { return &signinGuard{fails: map[string]signinFails{}} }

// clientAddr is the address a request came from, without its port.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// blocked reports whether addr has used up its refused sign-ins, and
// for how much longer.
func (g *signinGuard) blocked(addr string, now time.Time) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.fails[addr]
	if !ok || f.n < signinMaxFails {
		return 0, false
	}
	left := f.first.Add(signinWindow).Sub(now)
	if left <= 0 {
		delete(g.fails, addr)
		return 0, false
	}
	return left, true
}

// refused counts a refused token from addr.
func (g *signinGuard) refused(addr string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.fails[addr]
	if !ok || now.Sub(f.first) >= signinWindow {
		if !ok && len(g.fails) >= signinMaxAddrs {
			g.forgetEndedLocked(now)
		}
		if len(g.fails) >= signinMaxAddrs {
			return // a flood from thousands of addresses: each still needs a token
		}
		f = signinFails{first: now}
	}
	f.n++
	g.fails[addr] = f
}

func (g *signinGuard) forgetEndedLocked(now time.Time) {
	for a, f := range g.fails {
		if now.Sub(f.first) >= signinWindow {
			delete(g.fails, a)
		}
	}
}

// succeeded clears addr's refused sign-ins.
func (g *signinGuard) succeeded(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.fails, addr)
}
