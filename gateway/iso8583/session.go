package iso8583

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	moov "github.com/moov-io/iso8583"
	connection "github.com/moov-io/iso8583-connection"

	"storepay/gateway"
)

// session is one connection to the switch, from dial to close. The
// connection library runs its read and write loops; the session reads
// every frame itself (it is the library's MessageReader), matches answers
// to the requests waiting for them, and turns anything unexpected into a
// dropped connection.
//
// The library's own request matching (Connection.Send) is not used: Send
// takes no context, cannot tell a request that was never written from one
// that was, cannot tell a late answer from an unsolicited one, keeps
// reading after a message that does not unpack, and in v0.9.0 can
// deadlock when a connection fails while a Send is finishing (it sends on
// an unbuffered channel while holding the lock the finishing Send waits
// for).
type session struct {
	c    *Client
	conn *connection.Connection // set once newSession returns; see ready
	// ready is closed once conn is set, for the goroutines the reader
	// starts (an echo answer) that may run before.
	ready chan struct{}

	mu      sync.Mutex // guards the fields below
	pending map[string]*waiter
	closed  bool
	why     error // the first known reason the connection ended

	dead chan struct{} // closed when the connection is closed
}

// waiter is one request waiting for its answer.
type waiter struct {
	key string
	req Fields
	ch  chan Fields // buffered: the reader never blocks on it
}

// deadlineConn bounds every write: a peer that stops reading makes the
// write fail, and the connection with it, rather than blocking the
// library's write loop for ever.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (d deadlineConn) Write(p []byte) (int, error) {
	if err := d.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, err
	}
	return d.Conn.Write(p)
}

func newSession(c *Client, nc net.Conn) (*session, error) {
	s := &session{c: c, ready: make(chan struct{}), pending: map[string]*waiter{}, dead: make(chan struct{})}
	conn, err := connection.NewFrom(deadlineConn{nc, c.cfg.WriteTimeout}, Spec, ReadLengthHeader, WriteLengthHeader,
		connection.SetMessageReader(s),
		connection.ErrorHandler(func(err error) { c.log.Debug("iso8583 connection error", "err", err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("connection: %w", err)
	}
	s.conn = conn
	close(s.ready)
	go func() {
		<-conn.Done()
		s.end(errors.New("connection closed"))
	}()
	return s, nil
}

// end marks the session dead: every waiter wakes up, no request
// registers any more.
func (s *session) end(why error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.why == nil {
		s.why = why
	}
	s.mu.Unlock()
	close(s.dead)
}

// note records why the connection is ending, if nothing else did first.
func (s *session) note(why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.why == nil {
		s.why = why
	}
}

func (s *session) reason() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.why == nil {
		return errors.New("connection closed")
	}
	return s.why
}

// close closes the connection and waits until the session is dead.
func (s *session) close() {
	s.note(errors.New("closed by storepay"))
	_ = s.conn.Close()
	<-s.dead
}

// ReadMessage is the connection library's MessageReader: it reads one
// frame, unpacks it and hands it on. It returns (nil, nil) for every
// message it handled, which keeps the library reading; any error drops
// the connection (an error that is not a moov-io UnpackError, which the
// library would skip).
func (s *session) ReadMessage(r io.Reader) (*moov.Message, error) {
	raw, err := ReadFrame(r)
	if err == nil {
		var f Fields
		if f, err = Unpack(raw); err == nil {
			err = s.dispatch(f)
		}
	}
	if err != nil {
		var bad *BadInputError
		if errors.As(err, &bad) {
			s.c.countBad(bad)
		}
		s.note(err)
		return nil, err
	}
	return nil, nil
}

// dispatch hands an answer to its waiter, or to the late handler, and
// answers the switch's echo test. Anything else is bad input.
func (s *session) dispatch(f Fields) error {
	switch {
	case IsResponseMTI(f.MTI):
		key := f.STAN + "|" + f.TerminalID
		s.mu.Lock()
		w := s.pending[key]
		if w != nil {
			if err := CheckAnswer(w.req, f); err != nil {
				s.mu.Unlock()
				return err
			}
			// Delivered under the lock (the channel has room): a
			// waiter that gives up and finds itself gone from pending
			// finds the answer in its channel.
			delete(s.pending, key)
			w.ch <- f
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if s.c.takeLate(key, f) {
			return nil
		}
		return badInput(ReasonUnsolicited, "%s for STAN %s of terminal %q, which nothing awaits", f.MTI, f.STAN, f.TerminalID)
	case f.MTI == MTINetwork && f.NetworkCode == NetworkEcho:
		go s.answerEcho(f)
		return nil
	}
	return badInput(ReasonUnknownMTI, "MTI %s", f.MTI)
}

// answerEcho answers the switch's own echo test with 00.
func (s *session) answerEcho(req Fields) {
	<-s.ready
	ans := Fields{MTI: MTINetworkResponse, TransmissionTime: req.TransmissionTime, STAN: req.STAN, TerminalID: req.TerminalID, ResponseCode: CodeApproved}
	packed, err := ans.Pack()
	if err == nil {
		var frame []byte
		if frame, err = Frame(packed); err == nil {
			_, err = s.conn.Write(frame)
		}
	}
	if err != nil {
		s.c.log.Debug("iso8583 could not answer the switch's echo", "err", err)
	}
}

// roundTrip writes req and waits for its answer: until ctx is done, the
// client's Timeout, or the connection's end.
func (s *session) roundTrip(ctx context.Context, req Fields) (Fields, error) {
	c := s.c
	packed, err := req.Pack()
	if err != nil {
		return Fields{}, c.invalid(err)
	}
	frame, err := Frame(packed)
	if err != nil {
		return Fields{}, c.invalid(err)
	}
	if ctx.Err() != nil {
		return Fields{}, c.fail(gateway.KindNotSent, "", ctx.Err())
	}
	key := req.STAN + "|" + req.TerminalID
	w := &waiter{key: key, req: req, ch: make(chan Fields, 1)}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return Fields{}, c.fail(gateway.KindNotSent, "", fmt.Errorf("connection closed: %w", s.reason()))
	case s.pending[key] != nil:
		s.mu.Unlock()
		return Fields{}, c.fail(gateway.KindRejected, codeDuplicateSTAN, fmt.Errorf("STAN %s of terminal %q is already in flight", req.STAN, req.TerminalID))
	}
	s.pending[key] = w
	s.mu.Unlock()
	c.forgetLate(key)

	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	wrote := make(chan error, 1)
	go func() {
		// Connection.Write hands the frame to the library's write
		// loop and waits for the socket write; it fails with
		// ErrConnectionClosed, and writes nothing, once the
		// connection is closed.
		_, err := s.conn.Write(frame)
		wrote <- err
	}()
	for {
		select {
		case ans := <-w.ch:
			return ans, nil
		case err := <-wrote:
			wrote = nil
			if err == nil {
				continue // written: wait for the answer
			}
			s.forget(w)
			if errors.Is(err, connection.ErrConnectionClosed) {
				return Fields{}, c.fail(gateway.KindNotSent, "", fmt.Errorf("connection closed before the request was written: %w", s.reason()))
			}
			s.note(err)
			return Fields{}, c.fail(gateway.KindUnknown, "", fmt.Errorf("write %s: %w", req.MTI, err))
		case <-s.dead:
			if wrote != nil {
				if err := <-wrote; errors.Is(err, connection.ErrConnectionClosed) {
					s.forget(w)
					return Fields{}, c.fail(gateway.KindNotSent, "", fmt.Errorf("connection closed before the request was written: %w", s.reason()))
				}
			}
			if ans, ok := s.forget(w); ok {
				return ans, nil
			}
			return Fields{}, c.fail(gateway.KindUnknown, "", fmt.Errorf("connection closed after the %s was written: %w", req.MTI, s.reason()))
		case <-ctx.Done():
			if ans, ok := s.forget(w); ok {
				return ans, nil
			}
			// Written, or perhaps being written: its answer may still
			// come, and is then a late answer.
			c.abandoned(key, req)
			return Fields{}, c.fail(gateway.KindUnknown, "", fmt.Errorf("no answer to the %s: %w", req.MTI, ctx.Err()))
		}
	}
}

// forget unregisters w. If its answer was delivered meanwhile, it
// returns it.
func (s *session) forget(w *waiter) (Fields, bool) {
	s.mu.Lock()
	if s.pending[w.key] == w {
		delete(s.pending, w.key)
	}
	s.mu.Unlock()
	select {
	case ans := <-w.ch:
		return ans, true
	default:
		return Fields{}, false
	}
}
