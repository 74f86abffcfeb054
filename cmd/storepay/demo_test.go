package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"
)

// `storepay demo --hq` starts headquarters and two stores that it sees
// linked, prints how to reach them, and stops cleanly.
func TestDemoWithHeadquarters(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, []string{"-hq", "-dir", t.TempDir(), "-listen", "127.0.0.1:0"}, func(string) string { return "" }, &stdout, &stderr)
	}()
	api := regexp.MustCompile(`headquarters API\s+(http://\S+)/v1`)
	tok := regexp.MustCompile(`its token\s+(hq_\S+)`)
	var url, token string
	waitFor(t, "the demo's headquarters text", 60*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("demo stopped: %v\n%s", err, stderr.String())
		default:
		}
		out := stdout.String()
		if m := api.FindStringSubmatch(out); m != nil {
			url = m[1]
		}
		if m := tok.FindStringSubmatch(out); m != nil {
			token = m[1]
		}
		return url != "" && token != ""
	})
	waitFor(t, "both demo stores linked to headquarters", 30*time.Second, func() bool {
		req, _ := http.NewRequest("GET", url+"/v1/stores", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var body struct {
			Data []struct {
				StoreID string `json:"store_id"`
				Link    string `json:"link"`
			} `json:"data"`
		}
		if json.NewDecoder(res.Body).Decode(&body) != nil || len(body.Data) != 2 {
			return false
		}
		for _, s := range body.Data {
			if s.Link != "up" {
				return false
			}
		}
		return body.Data[0].StoreID == "store-042" && body.Data[1].StoreID == "store-043"
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo stopped with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not stop")
	}
}
