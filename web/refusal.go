package web

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Listener returns ln with net/http's own refusals answered like every
// other error of storepay: as problem+json with a request id.
//
// net/http reads a request's head before any handler runs, and refuses
// what it cannot read there itself, in plain text: a header name or value
// holding a control byte (NUL, CR, ESC, DEL, ...; a tab is allowed), a
// malformed request line or header line, a missing or malformed Host,
// headers over [http.Server.MaxHeaderBytes] (431), a transfer coding
// other than chunked (501), an HTTP version other than 1.x (505).
// http.Server has no hook for these answers, and storepay's middleware
// never sees the request.
//
// Reading the head before net/http does would mean framing every request
// of a kept-alive connection (Content-Length, chunked bodies, pipelining):
// parsing HTTP a second time. Instead each connection's writes are
// watched: net/http writes such a refusal straight to the connection, in
// one write of a fixed shape (see refusalStatus), and closes it. That one
// write is replaced by the same status as problem+json, with a fresh
// request id in X-Request-Id and the body, and a log line carrying it.
// Everything else is written as it is. The client's X-Request-Id cannot
// be echoed: the head it came in was not read.
//
// Shape matching is pinned by TestNetHTTPRefusalsAreProblems: if a Go
// release changes net/http's text, the test fails, and until fixed the
// answer is net/http's plain text again (nothing is lost or misread).
// The wrapped connection keeps CloseWrite, which net/http uses to close
// gracefully; it hides io.ReaderFrom (sendfile), which storepay, serving
// no files from disk, does not need.
func (s *Server) Listener(ln net.Listener) net.Listener {
	return refusalListener{Listener: ln, s: s}
}

type refusalListener struct {
	net.Listener
	s *Server
}

func (l refusalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &refusalConn{Conn: c, s: l.s}, nil
}

type refusalConn struct {
	net.Conn
	s *Server
}

// CloseWrite half-closes the connection when the connection beneath can.
func (c *refusalConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *refusalConn) Write(b []byte) (int, error) {
	status, said, ok := refusalStatus(b)
	if !ok {
		return c.Conn.Write(b)
	}
	id := "req_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	p := refusalProblem(status, said)
	p.RequestID = id
	body := p.encode()
	var head bytes.Buffer
	fmt.Fprintf(&head, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	fmt.Fprintf(&head, "Content-Type: application/problem+json\r\nX-Request-Id: %s\r\n", id)
	fmt.Fprintf(&head, "Date: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", c.s.now().UTC().Format(http.TimeFormat), len(body))
	c.s.log.Info("http request refused before routing", "request_id", id, "status", status, "code", p.Code,
		"remote", c.RemoteAddr().String())
	if _, err := c.Conn.Write(append(head.Bytes(), body...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// netHTTPRefusalHeaders is what net/http writes between the status line
// and the body of a refusal (errorHeaders in net/http's server.go).
const netHTTPRefusalHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// refusalStatus reports whether b is, whole, one of net/http's refusals
// of an unreadable request, and its status and net/http's words for it.
// Such a write is "HTTP/1.1 " + status line + netHTTPRefusalHeaders +
// a body that repeats the status line ("400 Bad Request", "400 Bad
// Request: invalid header name") or says "Unsupported transfer
// encoding". No answer of a handler has that shape: net/http writes a
// handler's headers sorted, Date among them, and every storepay answer
// carries X-Request-Id. A write of a body alone would have to end
// exactly there too.
func refusalStatus(b []byte) (status int, said string, ok bool) {
	const proto = "HTTP/1.1 "
	if len(b) > 512 || !bytes.HasPrefix(b, []byte(proto)) {
		return 0, "", false
	}
	line, body, found := bytes.Cut(b[len(proto):], []byte(netHTTPRefusalHeaders))
	if !found || bytes.ContainsAny(line, "\r\n") || bytes.ContainsAny(body, "\r\n") {
		return 0, "", false
	}
	if !bytes.Equal(body, line) && string(body) != "Unsupported transfer encoding" {
		return 0, "", false
	}
	code, rest, _ := strings.Cut(string(line), " ")
	status, err := strconv.Atoi(code)
	if err != nil || status < 400 || status > 599 || len(code) != 3 {
		return 0, "", false
	}
	_, said, _ = strings.Cut(rest, ": ")
	return status, said, true
}

// refusalProblem is the problem that stands for net/http's refusal:
// said is net/http's own words after the status ("invalid header name"),
// fixed texts of its source, never the client's bytes. Nothing of the
// request was done, which a terminal needs to know to retry safely.
func refusalProblem(status int, said string) *Problem {
	const nothing = " Nothing was done: send the request again, corrected."
	switch status {
	case http.StatusBadRequest:
		detail := "storepay could not read the request's head: a header name or value holds a control character " +
			"(only tab is allowed), or the request line or a header line is malformed."
		if said != "" {
			detail = "storepay could not read the request's head (" + said + ")."
		}
		return problem(status, "malformed_request", detail+nothing)
	case http.StatusRequestHeaderFieldsTooLarge:
		return problem(status, "headers_too_large", "the request's headers are larger than storepay reads."+nothing)
	case http.StatusNotImplemented:
		return problem(status, "unsupported_transfer_encoding", "the request's Transfer-Encoding is not one storepay reads (only chunked is)."+nothing)
	case http.StatusHTTPVersionNotSupported:
		return problem(status, "http_version_not_supported", "storepay speaks HTTP/1.0 and HTTP/1.1."+nothing)
	}
	return problem(status, "malformed_request", "storepay could not read the request ("+http.StatusText(status)+")."+nothing)
}
