package web_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A request net/http refuses before any handler runs (a header value
// with a control byte, a head it cannot read) is answered as
// problem+json with a request id, like every other error, over a real
// loopback connection, and logged with that id. No byte of the refused
// head is echoed.
func TestNetHTTPRefusalsAreProblems(t *testing.T) {
	e := newAPIEnv(t, slog.LevelInfo)
	ts := httptest.NewUnstartedServer(e.handler)
	ts.Listener = e.server.Listener(ts.Listener)
	ts.Config.MaxHeaderBytes = 4 << 10
	ts.Start()
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()

	get := func(extra string) string {
		return "GET /v1/orders/ord_x HTTP/1.1\r\nHost: store\r\nAuthorization: Bearer " + e.terminal + "\r\n" + extra + "\r\n"
	}
	for _, tc := range []struct {
		name, head string
		status     int
		code       string
	}{
		{"ControlByteInAValue", get("X-Note: a\x01b\r\n"), 400, "malformed_request"},
		{"NULInAValue", get("X-Note: a\x00b\r\n"), 400, "malformed_request"},
		{"DELInAValue", get("X-Note: a\x7fb\r\n"), 400, "malformed_request"},
		{"EscapeInTheIdempotencyKey", "POST /v1/orders HTTP/1.1\r\nHost: store\r\nAuthorization: Bearer " + e.terminal +
			"\r\nIdempotency-Key: k\x1b[31m\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 400, "malformed_request"},
		{"CardNumberBesideAControlByte", get("X-Note: 4242424242424242\x02\r\n"), 400, "malformed_request"},
		{"ControlByteInAName", get("X-No\x01te: 1\r\n"), 400, "malformed_request"},
		{"NoHost", "GET /healthz HTTP/1.1\r\n\r\n", 400, "malformed_request"},
		{"UnknownTransferEncoding", "POST /v1/orders HTTP/1.1\r\nHost: store\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported_transfer_encoding"},
		{"HTTP2OverHTTP1", "GET /healthz HTTP/2.0\r\nHost: store\r\n\r\n", 505, "http_version_not_supported"},
		{"HeadersTooLarge", get("X-Note: " + strings.Repeat("a", 16<<10) + "\r\n"), 431, "headers_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.logs.take()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go io.WriteString(c, tc.head) // a refused head may not be read to its end
			res, body := readAnswer(t, c)
			checkRefusal(t, e, res, body, tc.status, tc.code)
			if strings.Contains(string(body), "4242424242424242") || strings.Contains(e.logs.take(), "4242424242424242") {
				t.Errorf("a card number of the refused head was echoed or logged: %s", body)
			}
		})
	}

	// On a kept-alive connection, a request answered as usual, then one
	// refused: only the second answer is the refusal.
	t.Run("AfterAGoodRequestOnTheSameConnection", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: store\r\n\r\n"+get("X-Note: \x01\r\n")); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		first, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(first.Body)
		if first.StatusCode != 200 || first.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(b), `"ok"`) {
			t.Fatalf("the good request: %d %s %s", first.StatusCode, first.Header.Get("Content-Type"), b)
		}
		res, body := readAnswerFrom(t, br)
		checkRefusal(t, e, res, body, 400, "malformed_request")
	})
}

func readAnswer(t *testing.T, c net.Conn) (*http.Response, []byte) {
	t.Helper()
	return readAnswerFrom(t, bufio.NewReader(c))
}

func readAnswerFrom(t *testing.T, br *bufio.Reader) (*http.Response, []byte) {
	t.Helper()
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read the answer's body: %v", err)
	}
	return res, body
}

// checkRefusal holds an answer to the contract's error shape: the status,
// problem+json with its code, the X-Request-Id that the body and a log
// line name too, and the connection closed after it.
func checkRefusal(t *testing.T, e *fuzzEnv, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	var p struct {
		Type, Title, Detail, Code string
		Status                    int
		RequestID                 string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("%d %s: the body is not JSON: %v\n%s", res.StatusCode, res.Header.Get("Content-Type"), err, body)
	}
	id := res.Header.Get("X-Request-Id")
	if res.StatusCode != status || res.Header.Get("Content-Type") != "application/problem+json" || p.Status != status ||
		p.Code != code || p.Type == "" || p.Title == "" || !strings.Contains(p.Detail, "Nothing was done") {
		t.Fatalf("answer %d %s %s; want %d problem+json %s", res.StatusCode, res.Header.Get("Content-Type"), body, status, code)
	}
	if !strings.HasPrefix(id, "req_") || p.RequestID != id {
		t.Fatalf("X-Request-Id %q, body's request_id %q: want one id in both", id, p.RequestID)
	}
	if !res.Close {
		t.Errorf("the connection is kept after a refusal: %v", res.Header)
	}
	var logged bool
	for _, line := range strings.Split(strings.TrimSpace(e.logs.take()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["request_id"] == id && rec["msg"] == "http request refused before routing" {
			logged = true
		}
	}
	if !logged {
		t.Errorf("no log line names the refusal's request id %s", id)
	}
}
