package banksim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

// BenchmarkAuthorize measures sales per second over loopback with many
// concurrent clients, each with its own idempotency key.
func BenchmarkAuthorize(b *testing.B) {
	sim := banksim.New(banksim.Config{APIKey: apiKey})
	defer sim.Close()
	url, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ref := fmt.Sprintf("pay_%d", n.Add(1))
			body, _ := json.Marshal(authBody(ref, goodPAN, 100, true))
			req, _ := http.NewRequest(http.MethodPost, url+"/v1/authorizations", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+apiKey)
			req.Header.Set("Idempotency-Key", ref)
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
