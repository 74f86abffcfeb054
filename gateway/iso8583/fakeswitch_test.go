package iso8583_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/iso8583"
)

// fakeSwitch is a raw TCP switch the test drives byte by byte, to send
// what banksim never does: garbage, unknown MTIs, answers nobody asked
// for, bad length headers.
type fakeSwitch struct {
	t     *testing.T
	url   string
	conns chan net.Conn
}

func newFakeSwitch(t *testing.T) *fakeSwitch {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeSwitch{t: t, url: "tcp://" + ln.Addr().String(), conns: make(chan net.Conn, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			fs.conns <- c
		}
	}()
	return fs
}

type fakeConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// accept returns the client's next connection.
func (fs *fakeSwitch) accept() *fakeConn {
	fs.t.Helper()
	select {
	case c := <-fs.conns:
		return &fakeConn{t: fs.t, c: c, r: bufio.NewReader(c)}
	case <-time.After(5 * time.Second):
		fs.t.Fatal("the client did not connect")
		return nil
	}
}

func (fc *fakeConn) read() iso8583.Fields {
	fc.t.Helper()
	_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, err := iso8583.ReadFrame(fc.r)
	if err != nil {
		fc.t.Fatalf("fake switch read: %v", err)
	}
	f, err := iso8583.Unpack(raw)
	if err != nil {
		fc.t.Fatalf("fake switch unpack: %v", err)
	}
	return f
}

func (fc *fakeConn) writeRaw(b []byte) {
	fc.t.Helper()
	if _, err := fc.c.Write(b); err != nil {
		fc.t.Fatalf("fake switch write: %v", err)
	}
}

func (fc *fakeConn) packed(f iso8583.Fields) []byte {
	fc.t.Helper()
	b, err := f.Pack()
	if err != nil {
		fc.t.Fatal(err)
	}
	return b
}

func (fc *fakeConn) write(f iso8583.Fields) {
	fc.t.Helper()
	frame, err := iso8583.Frame(fc.packed(f))
	if err != nil {
		fc.t.Fatal(err)
	}
	fc.writeRaw(frame)
}

// answerOf is the profile's answer to req with code.
func answerOf(req iso8583.Fields, code string) iso8583.Fields {
	return iso8583.Fields{
		MTI: iso8583.ResponseMTI(req.MTI), ProcessingCode: req.ProcessingCode, Amount: req.Amount,
		TransmissionTime: req.TransmissionTime, STAN: req.STAN, RRN: req.RRN, TerminalID: req.TerminalID,
		ResponseCode: code, AuthCode: map[bool]string{true: "OK1234"}[code == "00" && req.MTI != "0800"],
	}
}

func (fc *fakeConn) signOn() {
	fc.t.Helper()
	req := fc.read()
	if req.MTI != "0800" || req.NetworkCode != "001" {
		fc.t.Fatalf("first message %v, want the sign-on", req)
	}
	fc.write(answerOf(req, "00"))
}

// closed waits until the client closed the connection.
func (fc *fakeConn) closed() {
	fc.t.Helper()
	_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := fc.r.ReadByte(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				fc.t.Fatal("the client kept the connection")
			}
			return
		}
	}
}

func frameOf(n int, body []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(n)), body...)
}

// Bad input from the switch is logged and counted, the connection dropped
// and rebuilt, the request in flight ends unknown, and nothing panics.
func TestBadInputFromTheSwitch(t *testing.T) {
	tests := []struct {
		name   string
		reason string
		bad    func(fc *fakeConn, req iso8583.Fields) []byte
	}{
		{"Garbage", iso8583.ReasonMalformed, func(*fakeConn, iso8583.Fields) []byte {
			return frameOf(8, []byte("garbage!"))
		}},
		{"UnknownMTI", iso8583.ReasonUnknownMTI, func(fc *fakeConn, req iso8583.Fields) []byte {
			f := answerOf(req, "00")
			f.MTI = "0610"
			return frameOf(len(fc.packed(f)), fc.packed(f))
		}},
		{"UnsolicitedSTAN", iso8583.ReasonUnsolicited, func(fc *fakeConn, req iso8583.Fields) []byte {
			f := answerOf(req, "00")
			f.STAN = "999999"
			return frameOf(len(fc.packed(f)), fc.packed(f))
		}},
		{"AnotherTerminal", iso8583.ReasonUnsolicited, func(fc *fakeConn, req iso8583.Fields) []byte {
			f := answerOf(req, "00")
			f.TerminalID = "OTHER001"
			return frameOf(len(fc.packed(f)), fc.packed(f))
		}},
		{"ZeroLengthHeader", iso8583.ReasonBadLength, func(*fakeConn, iso8583.Fields) []byte {
			return []byte{0, 0}
		}},
		{"LongerThanTheSpecAllows", iso8583.ReasonOversize, func(*fakeConn, iso8583.Fields) []byte {
			return frameOf(0xffff, make([]byte, 1024))
		}},
		{"LengthHeaderShorterThanTheMessage", iso8583.ReasonMalformed, func(fc *fakeConn, req iso8583.Fields) []byte {
			b := fc.packed(answerOf(req, "00"))
			return frameOf(len(b)-3, b)
		}},
		{"TrailingBytes", iso8583.ReasonMalformed, func(fc *fakeConn, req iso8583.Fields) []byte {
			b := append(fc.packed(answerOf(req, "00")), "XYZ"...)
			return frameOf(len(b), b)
		}},
		{"AnswerWithAnotherRRN", iso8583.ReasonMalformed, func(fc *fakeConn, req iso8583.Fields) []byte {
			f := answerOf(req, "00")
			f.RRN = "OTHER"
			return frameOf(len(fc.packed(f)), fc.packed(f))
		}},
		{"AnswerOfAnotherType", iso8583.ReasonMalformed, func(fc *fakeConn, req iso8583.Fields) []byte {
			f := answerOf(req, "00")
			f.MTI = "0110"
			return frameOf(len(fc.packed(f)), fc.packed(f))
		}},
		{"AnswerWithoutResponseCode", iso8583.ReasonMalformed, func(fc *fakeConn, req iso8583.Fields) []byte {
			f := answerOf(req, "00")
			f.ResponseCode = ""
			return frameOf(len(fc.packed(f)), fc.packed(f))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeSwitch(t)
			h := open(t, fs.url, nil)
			fc := fs.accept()
			fc.signOn()
			h.waitReady()

			p := h.purchase(100)
			got := make(chan error, 1)
			go func() {
				_, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
				got <- err
			}()
			req := fc.read()
			fc.writeRaw(tt.bad(fc, req))
			fc.closed()
			wantKind(t, <-got, gateway.KindUnknown, "")
			if s := h.c.Stats(); s.BadInput[tt.reason] != 1 || len(s.BadInput) != 1 {
				t.Errorf("bad input counted %v, want one %s", s.BadInput, tt.reason)
			}

			// Rebuilt: a new connection, signed on, that works.
			fc2 := fs.accept()
			fc2.signOn()
			h.waitReady()
			go func() {
				_, err := h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(200))
				got <- err
			}()
			fc2.write(answerOf(fc2.read(), "00"))
			if err := <-got; err != nil {
				t.Fatalf("after the reconnection: %v", err)
			}
		})
	}
}

// A switch that sends garbage on every connection gets a client that
// backs off between attempts instead of spinning.
func TestBadInputOnEveryConnectionBacksOff(t *testing.T) {
	fs := newFakeSwitch(t)
	h := open(t, fs.url, func(c *iso8583.Config) { c.BackoffMin, c.BackoffMax = 20*time.Millisecond, 40*time.Millisecond })
	begin := time.Now()
	for range 4 {
		fc := fs.accept()
		fc.signOn()
		fc.writeRaw(frameOf(3, []byte("bad")))
		fc.closed()
	}
	if took := time.Since(begin); took < 3*20*time.Millisecond {
		t.Errorf("4 connections in %v: no backoff", took)
	}
	if s := h.c.Stats(); s.BadInput[iso8583.ReasonMalformed] < 4 {
		t.Errorf("stats = %+v", s)
	}
}

func TestSignOnUnansweredIsNotSent(t *testing.T) {
	fs := newFakeSwitch(t)
	h := open(t, fs.url, func(c *iso8583.Config) {
		c.ConnectTimeout = 100 * time.Millisecond
		c.BackoffMin, c.BackoffMax = time.Hour, time.Hour // stays down after the first attempt
	})
	fc := fs.accept()
	if req := fc.read(); req.NetworkCode != "001" {
		t.Fatalf("first message %v", req)
	}
	fc.closed() // the client gave up on the sign-on and hung up
	eventually(t, "a failed attempt", func() bool { return h.c.Stats().ConnectFailures > 0 })
	_, err := h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(100))
	wantKind(t, err, gateway.KindNotSent, "")
}

// The switch's own echo test is answered.
func TestSwitchEchoIsAnswered(t *testing.T) {
	fs := newFakeSwitch(t)
	h := open(t, fs.url, nil)
	fc := fs.accept()
	fc.signOn()
	h.waitReady()
	fc.write(iso8583.Fields{MTI: "0800", TransmissionTime: "1121101500", STAN: "000777", TerminalID: "SP042001", NetworkCode: "301"})
	ans := fc.read()
	if ans.MTI != "0810" || ans.STAN != "000777" || ans.ResponseCode != "00" {
		t.Fatalf("answer = %v", ans)
	}
	if s := h.c.Stats(); len(s.BadInput) != 0 || !h.c.Ready() {
		t.Errorf("stats = %+v", s)
	}
}
