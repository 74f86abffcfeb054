package banksim

// The ISO 8583 switch: the profile of iso8583-profile.md served over the
// same ledger, admin API and faults as the JSON protocol.
//
// A message flows through one pipeline (handleISO):
//
//  1. it is counted per listener and MTI ([Ledger.Requests]);
//  2. the installed [Faults] are drawn for it: Blackhole holds it,
//     Unauthorized answers 03, NotProcessed 91, Error 96, without any
//     work (RateLimit does not apply to this protocol);
//  3. before the connection signed on (0800, 70 = 001) anything else is
//     answered 91; a merchant_id other than Config.MerchantID (when set)
//     is answered 03;
//  4. the work is done at most once per RRN and terminal_id (isoops.go),
//     after any Latency: a message whose RRN was processed before is
//     answered with the first answer's 38 and 39 and changes nothing;
//  5. the answer is written; ErrorAfterApply sends 96 instead (the work
//     is done and a repeat learns its real answer); DropAfterApply
//     resets the connection instead.
//
// Refuse closes the listening socket and resets every connection.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	moov "github.com/moov-io/iso8583"
	connection "github.com/moov-io/iso8583-connection"

	"storepay/gateway/iso8583"
)

// ProtocolISO8583 is the Protocol of the authorizations made over ISO 8583.
const ProtocolISO8583 = "iso8583"

// isoListener is the ISO 8583 side of a listener.
type isoListener struct {
	tls *tls.Config // nil: plain TCP

	mu    sync.Mutex // guards the fields below
	ln    net.Listener
	conns map[*isoConn]struct{}
	calls map[string]int64 // by MTI; EndpointOther for what is not a message
}

func (il *isoListener) count(mti string) {
	il.mu.Lock()
	defer il.mu.Unlock()
	il.calls[mti]++
}

func (il *isoListener) countsInto(m map[string]int64) {
	il.mu.Lock()
	defer il.mu.Unlock()
	maps.Copy(m, il.calls)
}

func (il *isoListener) resetCounts() {
	il.mu.Lock()
	defer il.mu.Unlock()
	clear(il.calls)
}

// ListenISO8583 starts an ISO 8583 switch listener on addr ("127.0.0.1:0"
// picks a free port) and returns its URL, such as "tcp://127.0.0.1:41234".
// It serves the same ledger as the JSON listeners; operations are booked
// in the account of Config.APIKey (its settlement report holds them).
func (s *Sim) ListenISO8583(addr string) (string, error) { return s.listenISO(addr, nil) }

// ListenISO8583TLS is ListenISO8583 over TLS with conf (which must hold a
// certificate); the URL is tls://host:port.
func (s *Sim) ListenISO8583TLS(addr string, conf *tls.Config) (string, error) {
	if conf == nil {
		return "", errors.New("banksim: ISO 8583 over TLS without a TLS config")
	}
	return s.listenISO(addr, conf)
}

func (s *Sim) listenISO(addr string, conf *tls.Config) (string, error) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.closed {
		return "", errors.New("banksim: closed")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("banksim: listen: %w", err)
	}
	l := &listener{addr: ln.Addr().String(), iso: &isoListener{tls: conf, conns: map[*isoConn]struct{}{}, calls: map[string]int64{}}}
	l.url = "tcp://" + l.addr
	if conf != nil {
		l.url = "tls://" + l.addr
	}
	s.listeners = append(s.listeners, l)
	s.serve(l, ln)
	s.log.Info("banksim listening", "url", l.url, "protocol", ProtocolISO8583)
	if err := s.applyRefuse(); err != nil {
		return l.url, err
	}
	return l.url, nil
}

// serveISO accepts connections on ln. Caller holds lnMu.
func (s *Sim) serveISO(l *listener, ln net.Listener) {
	l.ln = ln
	l.iso.mu.Lock()
	l.iso.ln = ln
	l.iso.mu.Unlock()
	s.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.startISOConn(l, ln, nc)
		}
	})
}

// stopISO closes l's socket and resets every connection it accepted: a
// switch that crashed. Caller holds lnMu.
func (s *Sim) stopISO(l *listener) {
	_ = l.ln.Close()
	l.ln = nil
	l.iso.mu.Lock()
	l.iso.ln = nil
	conns := slices.Collect(maps.Keys(l.iso.conns))
	l.iso.mu.Unlock()
	for _, ic := range conns {
		ic.kill()
	}
}

// isoConn is one client connection of the switch.
type isoConn struct {
	s    *Sim
	l    *listener
	raw  net.Conn               // the TCP socket, to reset it
	conn *connection.Connection // set before ready is closed
	// ready is closed once conn is set: the reader may start handlers
	// before.
	ready chan struct{}
	// ctx ends with the connection: a held or waiting message is then
	// dropped unanswered.
	ctx      context.Context
	cancel   context.CancelFunc
	signedOn atomic.Bool

	mu     sync.Mutex // guards closed and the Add side of wg
	closed bool
	wg     sync.WaitGroup // message handlers
}

func (s *Sim) startISOConn(l *listener, ln net.Listener, raw net.Conn) {
	il := l.iso
	ic := &isoConn{s: s, l: l, raw: raw, ready: make(chan struct{})}
	ic.ctx, ic.cancel = context.WithCancel(context.Background())
	il.mu.Lock()
	if il.ln != ln { // refused meanwhile
		il.mu.Unlock()
		ic.cancel()
		_ = raw.Close()
		return
	}
	il.conns[ic] = struct{}{}
	il.mu.Unlock()

	var nc net.Conn = raw
	if il.tls != nil {
		nc = tls.Server(raw, il.tls)
	}
	conn, err := connection.NewFrom(nc, iso8583.Spec, iso8583.ReadLengthHeader, iso8583.WriteLengthHeader,
		connection.SetMessageReader(ic),
		connection.ErrorHandler(func(err error) { s.log.Debug("banksim iso8583 connection error", "url", l.url, "err", err) }),
	)
	if err != nil { // cannot happen: NewFrom fails only on bad options
		s.log.Error("banksim iso8583 connection", "err", err)
		ic.cancel()
		_ = raw.Close()
		il.mu.Lock()
		delete(il.conns, ic)
		il.mu.Unlock()
		return
	}
	ic.conn = conn
	close(ic.ready)
	s.wg.Go(func() {
		select {
		case <-conn.Done():
		case <-s.done:
			ic.kill()
			<-conn.Done()
		}
		ic.cancel()
		ic.mu.Lock()
		ic.closed = true
		ic.mu.Unlock()
		ic.wg.Wait()
		il.mu.Lock()
		delete(il.conns, ic)
		il.mu.Unlock()
	})
}

// kill resets the connection (RST, not FIN): the client sees its request
// written and no answer.
func (ic *isoConn) kill() {
	if tcp, ok := ic.raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = ic.raw.Close()
}

// ReadMessage is the connection library's MessageReader: it reads one
// frame and starts its handler. Bad input from the client drops the
// connection.
func (ic *isoConn) ReadMessage(r io.Reader) (*moov.Message, error) {
	raw, err := iso8583.ReadFrame(r)
	var f iso8583.Fields
	if err == nil {
		f, err = iso8583.Unpack(raw)
	}
	if err != nil {
		var bad *iso8583.BadInputError
		if errors.As(err, &bad) {
			ic.l.iso.count(EndpointOther)
			ic.s.log.Warn("banksim iso8583 bad input: dropping the connection", "url", ic.l.url, "reason", bad.Reason, "err", bad.Err)
		}
		return nil, err
	}
	ic.mu.Lock()
	if ic.closed {
		ic.mu.Unlock()
		return nil, errors.New("connection closed")
	}
	ic.wg.Add(1)
	ic.mu.Unlock()
	go func() {
		defer ic.wg.Done()
		<-ic.ready
		ic.s.handleISO(ic, f)
	}()
	return nil, nil
}

// handleISO runs one message through the pipeline described at the top
// of this file.
func (s *Sim) handleISO(ic *isoConn, f iso8583.Fields) {
	l := ic.l
	l.iso.count(f.MTI)
	log := s.log.With("url", l.url, "mti", f.MTI, "stan", f.STAN, "rrn", f.RRN)
	if iso8583.ResponseMTI(f.MTI) == "" {
		log.Warn("banksim iso8583: not a request of the profile: dropping the connection")
		ic.kill()
		return
	}
	d := s.decide(l.url, f.MTI == iso8583.MTINetwork)
	if len(d.blackhole) > 0 && !s.hold(ic.ctx, l.url, d.blackhole) {
		return // the connection or the simulator closed: no answer
	}
	early := ""
	switch {
	case d.unauthorized:
		early = iso8583.CodeInvalidMerchant
	case d.notProcessed:
		early = iso8583.CodeUnavailable
	case d.serverError:
		early = iso8583.CodeMalfunction
	}
	if early != "" {
		s.delay(l.url, d.delay, d.latency)
		s.answerISO(ic, log, f, early, "", d.drop)
		return
	}
	if !d.afterWork {
		s.delay(l.url, d.delay, d.latency)
	}
	code, authCode, ok := s.isoWork(ic, f)
	if !ok {
		return
	}
	if d.afterWork {
		s.delay(l.url, d.delay, d.latency)
	}
	if d.failAfter {
		code, authCode = iso8583.CodeMalfunction, ""
	}
	s.answerISO(ic, log, f, code, authCode, d.drop)
}

// isoWork answers a message that met no fault. ok is false when no
// answer is to be sent (the connection or the simulator closed while a
// duplicate waited for its first).
func (s *Sim) isoWork(ic *isoConn, f iso8583.Fields) (code, authCode string, ok bool) {
	if err := iso8583.CheckRequest(f); err != nil {
		return iso8583.CodeFormatError, "", true
	}
	if f.MTI == iso8583.MTINetwork {
		switch f.NetworkCode {
		case iso8583.NetworkSignOn:
			ic.signedOn.Store(true)
			return iso8583.CodeApproved, "", true
		case iso8583.NetworkEcho:
			if !ic.signedOn.Load() {
				return iso8583.CodeUnavailable, "", true
			}
			return iso8583.CodeApproved, "", true
		}
		return iso8583.CodeFormatError, "", true
	}
	switch {
	case !ic.signedOn.Load():
		return iso8583.CodeUnavailable, "", true // nothing before the sign-on
	case s.cfg.MerchantID != "" && f.MerchantID != s.cfg.MerchantID:
		return iso8583.CodeInvalidMerchant, "", true
	}
	return s.iso.once(ic.ctx, s.done, f.TerminalID, f.RRN, func() (string, string) {
		return s.isoOperation(f)
	})
}

// answerISO sends the answer to req: its 3, 4, 7, 11, 37 and 41, the
// response code, and 38 when approved. With drop it resets the connection
// instead.
func (s *Sim) answerISO(ic *isoConn, log *slog.Logger, req iso8583.Fields, code, authCode string, drop bool) {
	if drop {
		log.Debug("banksim iso8583 dropping the connection after the work", "response_code", code)
		ic.kill()
		return
	}
	ans := isoAnswer(req, code, authCode)
	packed, err := ans.Pack()
	var frame []byte
	if err == nil {
		frame, err = iso8583.Frame(packed)
	}
	if err != nil {
		log.Error("banksim iso8583 cannot pack the answer", "err", err)
		return
	}
	if _, err := ic.conn.Write(frame); err != nil {
		log.Debug("banksim iso8583 answer not sent", "err", err)
		return
	}
	log.Debug("banksim iso8583 answer", "response_code", code)
}

// isoAnswer is the answer to req with a response code.
func isoAnswer(req iso8583.Fields, code, authCode string) iso8583.Fields {
	ans := iso8583.Fields{
		MTI:              iso8583.ResponseMTI(req.MTI),
		ProcessingCode:   req.ProcessingCode,
		Amount:           req.Amount,
		TransmissionTime: req.TransmissionTime,
		STAN:             req.STAN,
		RRN:              req.RRN,
		TerminalID:       req.TerminalID,
		ResponseCode:     code,
	}
	if code == iso8583.CodeApproved {
		ans.AuthCode = authCode
	}
	return ans
}

// ISO8583Exchange returns the switch as a function, served in-process
// under url (which names it in the ledger) without a socket, a
// connection or faults: for the simulator, which applies its own faults
// and calls it from its own transport. The link counts as signed on.
func (s *Sim) ISO8583Exchange(url string) func(req iso8583.Fields) iso8583.Fields {
	s.lnMu.Lock()
	l := &listener{url: url, inproc: true, iso: &isoListener{conns: map[*isoConn]struct{}{}, calls: map[string]int64{}}}
	s.listeners = append(s.listeners, l)
	s.lnMu.Unlock()
	ic := &isoConn{s: s, l: l, ctx: context.Background()}
	ic.signedOn.Store(true)
	return func(req iso8583.Fields) iso8583.Fields {
		l.iso.count(req.MTI)
		code, authCode, _ := s.isoWork(ic, req)
		return isoAnswer(req, code, authCode)
	}
}
