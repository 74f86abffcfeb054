package banksim

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// idemStore keeps the answers given under each idempotency key, per API
// key. An entry is the key's lock: while its first request runs, the
// entry is marked running and every other request with that key is
// answered 409 without waiting on anything.
type idemStore struct {
	mu       sync.Mutex
	entries  map[accountKey]*idemEntry
	inflight map[accountKey]int // references of authorizations being processed
	claims   int                // claims since the last prune
}

// accountKey scopes a string (idempotency key or reference) to an API key.
type accountKey struct{ apiKey, key string }

type idemEntry struct {
	fingerprint [sha256.Size]byte
	running     bool
	answer      answer
	reference   string // of a running authorization, for the inflight index
	at          time.Time
}

// claimResult is what the store says about a request's key.
type claimResult int

const (
	claimNew    claimResult = iota // first request: do the work, then complete
	claimReplay                    // same request done before: replay its answer
	claimReuse                     // same key, other request: 422
	claimInUse                     // same request still running: 409
)

func (st *idemStore) init() {
	st.entries = map[accountKey]*idemEntry{}
	st.inflight = map[accountKey]int{}
}

func (st *idemStore) reset() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.init()
}

// claim looks key up. On claimNew the caller owns the returned entry and
// must call complete or release; reference (of an authorization) is then
// marked in flight until it does.
func (st *idemStore) claim(apiKey, key string, fp [sha256.Size]byte, reference string, now, expired time.Time) (*idemEntry, claimResult) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.claims++
	if st.claims >= 4096 {
		st.pruneLocked(expired)
	}
	k := accountKey{apiKey, key}
	if e, ok := st.entries[k]; ok && !(e.at.Before(expired) && !e.running) {
		switch {
		case e.fingerprint != fp:
			return e, claimReuse
		case e.running:
			return e, claimInUse
		default:
			return e, claimReplay
		}
	}
	e := &idemEntry{fingerprint: fp, running: true, reference: reference, at: now}
	st.entries[k] = e
	if reference != "" {
		st.inflight[accountKey{apiKey, reference}]++
	}
	return e, claimNew
}

// complete records the first answer of a claimed key.
func (st *idemStore) complete(apiKey string, e *idemEntry, a answer) {
	st.mu.Lock()
	defer st.mu.Unlock()
	e.answer = a
	e.running = false
	st.leaveLocked(apiKey, e)
}

// release forgets a claimed key whose work did not finish (a panic), so
// that it can be retried.
func (st *idemStore) release(apiKey, key string, e *idemEntry) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.entries[accountKey{apiKey, key}] == e {
		delete(st.entries, accountKey{apiKey, key})
	}
	e.running = false
	st.leaveLocked(apiKey, e)
}

func (st *idemStore) leaveLocked(apiKey string, e *idemEntry) {
	if e.reference == "" {
		return
	}
	k := accountKey{apiKey, e.reference}
	if st.inflight[k]--; st.inflight[k] <= 0 {
		delete(st.inflight, k)
	}
	e.reference = ""
}

// lookup returns the state of key: found, still running, and the
// authorization ids its answer created or changed.
func (st *idemStore) lookup(apiKey, key string) (found, running bool, ids []string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.entries[accountKey{apiKey, key}]
	if !ok {
		return false, false, nil
	}
	return true, e.running, e.answer.authIDs
}

// referenceInFlight reports whether an authorization with reference is
// being processed.
func (st *idemStore) referenceInFlight(apiKey, reference string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.inflight[accountKey{apiKey, reference}] > 0
}

// running counts the keys being processed.
func (st *idemStore) running() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, e := range st.entries {
		if e.running {
			n++
		}
	}
	return n
}

func (st *idemStore) pruneLocked(expired time.Time) {
	st.claims = 0
	for k, e := range st.entries {
		if !e.running && e.at.Before(expired) {
			delete(st.entries, k)
		}
	}
}

// fingerprint identifies a request for idempotency: method, path and the
// canonical form of its JSON body (keys sorted, no insignificant space,
// numbers as written), so that the same payload encoded differently is
// still the same request. A body that is not JSON is taken byte for byte;
// an empty body counts as {}.
func fingerprint(method, path string, body []byte) [sha256.Size]byte {
	canon := canonicalJSON(body)
	h := sha256.New()
	h.Write([]byte(method + " " + path + "\n"))
	h.Write(canon)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func canonicalJSON(body []byte) []byte {
	if len(bytes.TrimSpace(body)) == 0 {
		return []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return body
	}
	canon, err := json.Marshal(v)
	if err != nil {
		return body
	}
	return canon
}

// parseKey reads an Idempotency-Key header: a bare token or an RFC 8941
// sf-string ("..."), both naming the same key. It reports false unless the
// key is 1 to 255 printable ASCII characters.
func parseKey(h string) (string, bool) {
	if len(h) >= 2 && h[0] == '"' && h[len(h)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(h)-1; i++ {
			c := h[i]
			if c == '\\' {
				i++
				if i == len(h)-1 || (h[i] != '"' && h[i] != '\\') {
					return "", false
				}
				c = h[i]
			} else if c == '"' {
				return "", false
			}
			b.WriteByte(c)
		}
		h = b.String()
	}
	if len(h) == 0 || len(h) > 255 {
		return "", false
	}
	if strings.IndexFunc(h, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
		return "", false
	}
	return h, true
}
