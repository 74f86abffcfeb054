package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serve answers a header value with a control byte, which net/http
// refuses before any handler runs, as problem+json with a request id
// (web.Server.Listener), and the store takes the same order when it is
// sent again without it.
func TestServeAnswersAControlByteInAHeaderAsAProblem(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","description":"a","quantity":1,"unit_amount":100}]}`
	go io.WriteString(c, "POST /v1/orders HTTP/1.1\r\nHost: store\r\nAuthorization: Bearer "+s.terminal+
		"\r\nIdempotency-Key: order-\x07-1\r\nContent-Type: application/json\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+body)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	var p struct {
		Code      string
		Status    int
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(raw, &p); err != nil || res.StatusCode != 400 || p.Status != 400 ||
		res.Header.Get("Content-Type") != "application/problem+json" || p.Code != "malformed_request" ||
		p.RequestID == "" || p.RequestID != res.Header.Get("X-Request-Id") {
		t.Fatalf("answer %d %s %s: want a 400 malformed_request problem with its request id", res.StatusCode, res.Header.Get("Content-Type"), raw)
	}
	var n int
	if err := s.app.DB.Read().QueryRow(`SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d orders after the refused request (%v); want none", n, err)
	}
	must(t, s.post("/v1/orders", body), http.StatusCreated)
}
