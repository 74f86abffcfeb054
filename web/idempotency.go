package web

import (
	"storepay/gateway"

	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"storepay/migrations"
	"storepay/orders"
)

// Idempotency, as the contract and the IETF Idempotency-Key draft say,
// all of it in this file:
//
//   - every terminal POST carries a key (bare or an RFC 8941 sf-string);
//   - the key is scoped to the calling device and bound to a keyed hash of
//     the request (method, path, canonical JSON body);
//   - a keyed handler ([keyed]) never writes its answer: it returns its
//     result or error, and [Server.idempotent] renders, stores and sends
//     it. The domain receives the request's identity and an
//     orders.Reply explicitly (orders.Request), and on the hot paths
//     stores the answer in the very transaction that commits the outcome,
//     so a request costs one durable write; otherwise the answer is
//     stored right after the handler, before it is sent;
//   - a repeat gets the very same status and body, even after a restart;
//   - a repeat while the first still runs gets 409. The domain knows it
//     from the payment's lease in the database; the in-memory set of
//     running keys here only answers it sooner;
//   - a request cut off by a crash left no answer: its repeat runs again,
//     and the domain resumes what the first had started (orders and
//     payments remember the key and the request hash that made them, so
//     a reuse of the key with another request is still refused).
//
// 5xx answers, transient conflicts and reused-key refusals are not
// stored: the same request may succeed later, and a refusal about the key
// must not stand in the place of the request the key belongs to.

// IdempotencyTTL is how long answers are kept for replay (at least 72h,
// as the contract promises).
const IdempotencyTTL = 72 * time.Hour

type idemStore struct {
	db      *migrations.DB
	mu      sync.Mutex
	running map[string]bool
}

func newIdemStore(db *migrations.DB) *idemStore {
	return &idemStore{db: db, running: map[string]bool{}}
}

type idemRecord struct {
	hash        string
	status      int
	contentType string
	location    string
	body        []byte
}

func (s *idemStore) lock(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[k] {
		return false
	}
	s.running[k] = true
	return true
}

func (s *idemStore) unlock(k string) {
	s.mu.Lock()
	delete(s.running, k)
	s.mu.Unlock()
}

// lookup returns the stored answer for a key, if any.
func (s *idemStore) lookup(ctx context.Context, device, key string) (rec idemRecord, found bool, err error) {
	err = s.db.Read().QueryRowContext(ctx, `SELECT request_hash, status_code, content_type, location, body FROM idempotency
		WHERE device_id = ? AND key = ?`, device, key).Scan(&rec.hash, &rec.status, &rec.contentType, &rec.location, &rec.body)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, false, nil
	}
	return rec, err == nil, err
}

// store writes an answer inside tx.
func storeAnswer(tx *sql.Tx, device, key string, rec idemRecord, now time.Time) error {
	_, err := tx.Exec(`INSERT INTO idempotency (device_id, key, request_hash, status_code, content_type, location, body, created_at)
		VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (device_id, key) DO UPDATE SET request_hash = excluded.request_hash,
		status_code = excluded.status_code, content_type = excluded.content_type, location = excluded.location, body = excluded.body`,
		device, key, rec.hash, rec.status, rec.contentType, rec.location, rec.body, migrations.FormatTime(now))
	return err
}

// prune deletes records older than the TTL.
func (s *idemStore) prune(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.db.Update(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM idempotency WHERE created_at < ?`, migrations.FormatTime(now.Add(-IdempotencyTTL)))
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return n, err
}

// parseIdempotencyKey accepts a bare key or a quoted sf-string; both are
// the same key. It returns the key and whether it is valid: 1 to 255
// printable ASCII characters.
func parseIdempotencyKey(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, `"`) {
		// An sf-string must be whole: a lone opening quote is malformed,
		// not a bare key that happens to start with one.
		if len(v) < 2 || v[len(v)-1] != '"' {
			return "", false
		}
		inner := v[1 : len(v)-1]
		var b strings.Builder
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			if c == '\\' {
				i++
				if i == len(inner) || (inner[i] != '"' && inner[i] != '\\') {
					return "", false
				}
				c = inner[i]
			} else if c == '"' {
				return "", false
			}
			b.WriteByte(c)
		}
		v = b.String()
	}
	if len(v) < 1 || len(v) > 255 {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "", false
		}
	}
	return v, true
}

// requestHash binds a key to what was asked: method, path and the body as
// canonical JSON (so that key order or spacing do not matter).
// requestHash tells a request from another under the same key. It is
// "h1.<key id>.<HMAC>", keyed under the card key (a payment's body holds
// its card number; a plain hash of it could be reversed), and names its
// key so that a hash made under another card key is known to be
// incomparable (orders.SameHashKey).
func (s *Server) requestHash(method, path string, body []byte) string {
	if s.orders == nil || s.orders.Vault == nil {
		return plainRequestHash(method, path, body) // servers without payments
	}
	h := s.orders.Vault.RequestHash()
	writeCanonical(h, method, path, body)
	return "h1." + s.orders.Vault.RequestHashID() + "." + hex.EncodeToString(h.Sum(nil))
}

// plainRequestHash is the unkeyed SHA-256 that answers stored before
// keyed hashes carry (migration 0006); they are pruned within 72 hours.
func plainRequestHash(method, path string, body []byte) string {
	h := sha256.New()
	writeCanonical(h, method, path, body)
	return hex.EncodeToString(h.Sum(nil))
}

func writeCanonical(h io.Writer, method, path string, body []byte) {
	h.Write([]byte(method + " " + path + "\n"))
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err == nil {
		// One JSON value and nothing after it is hashed in canonical form,
		// so that formatting does not matter; anything else as sent.
		if _, err := dec.Token(); errors.Is(err, io.EOF) {
			if canon, err := json.Marshal(v); err == nil {
				body = canon
			}
		}
	}
	h.Write(body)
}

// keyed is a terminal POST run under an Idempotency-Key. It does the work
// and returns its result (the Order or Payment answered) or an error; it
// never writes the answer itself. req carries the request's identity and
// the orders.Reply that stores its answer with the outcome.
type keyed func(r *http.Request, req orders.Request) (any, error)

// answerShape is how a keyed route answers a result: its status and,
// for what it creates, the Location.
type answerShape struct {
	status   int
	location func(result any) string
}

// idempotent serves h under the Idempotency-Key rules. checked is for
// routes whose domain checks a repeated key against what the key made
// (orders.Service.CreateOrder and Pay): a stored hash made under another
// card key cannot tell a repeat, and the request goes on to be checked
// there.
func (s *Server) idempotent(shape answerShape, checked bool, h keyed) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values("Idempotency-Key")
		if len(vals) == 0 || (len(vals) == 1 && strings.TrimSpace(vals[0]) == "") {
			// An empty header is no key at all.
			writeProblem(w, r, problem(http.StatusBadRequest, "idempotency_key_required", "every POST needs an Idempotency-Key header"))
			return
		}
		key, ok := parseIdempotencyKey(vals[0])
		if len(vals) > 1 || !ok {
			writeProblem(w, r, problem(http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be one value of 1 to 255 printable ASCII characters"))
			return
		}
		if gateway.MaskPANs(key) != key {
			// The key is stored and logged as it is: one that reads as a
			// card number (a card swiped into the wrong field) is refused,
			// not kept.
			writeProblem(w, r, problem(http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key looks like a card number; send a generated id such as a UUID"))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeProblem(w, r, decodeProblem(err))
			return
		}
		if p := checkContentType(r, body); p != nil {
			// Refused before the key is looked up or kept: the same
			// request sent again as JSON is a first request, not a replay.
			writeProblem(w, r, p)
			return
		}
		ri := info(r)
		dev := ri.Device.ID
		lockKey := dev + "\x00" + key
		if !s.idem.lock(lockKey) {
			writeProblem(w, r, problem(http.StatusConflict, "idempotency_key_in_use", "a request with this Idempotency-Key is still running; retry shortly"))
			return
		}
		defer s.idem.unlock(lockKey)
		hash := s.requestHash(r.Method, r.URL.Path, body)
		rec, found, err := s.idem.lookup(r.Context(), dev, key)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		fallThrough := false
		switch {
		case !found || rec.hash == hash:
		case !strings.HasPrefix(rec.hash, "h1."):
			// Stored before hashes were keyed: compared as it was made.
			if rec.hash != plainRequestHash(r.Method, r.URL.Path, body) {
				writeProblem(w, r, problem(http.StatusUnprocessableEntity, "idempotency_key_reuse", "this Idempotency-Key was used for a different request"))
				return
			}
		case orders.SameHashKey(rec.hash, hash):
			writeProblem(w, r, problem(http.StatusUnprocessableEntity, "idempotency_key_reuse", "this Idempotency-Key was used for a different request"))
			return
		case checked:
			// Made under another card key: it cannot tell. The request goes
			// on; the order or payment its key made is found and checked
			// against the request there. A refusal is not stored over the
			// first answer.
			found, fallThrough = false, true
		default:
			// Made under another card key, for an operation that keeps no
			// record to check against: refused, as a reuse would be.
			writeProblem(w, r, problem(http.StatusUnprocessableEntity, "idempotency_key_reuse",
				"this Idempotency-Key was used under another card key and cannot be checked; use a new key"))
			return
		}
		if found {
			idemReplays.Add(r.Context(), 1)
			w.Header().Set("Idempotent-Replayed", "true")
			sendAnswer(w, rec)
			return
		}
		// The body is read: its length is known now, also when it came
		// chunked, so handlers that take an optional body see an empty one
		// as empty.
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		reply := &reply{device: dev, key: key, hash: hash, shape: shape, now: s.now}
		result, err := h(r, orders.Request{Key: dev + ":" + key, Hash: hash, Reply: reply})
		store := true
		switch {
		case err != nil:
			p, keep := s.problemFor(r, err)
			p.RequestID = ri.ID
			rec = idemRecord{hash: hash, status: p.Status, contentType: "application/problem+json", body: p.encode()}
			store = keep && p.Status < 500 && !fallThrough
		case reply.stored != nil:
			rec, store = *reply.stored, false // on disk with the outcome already
		default:
			if rec, err = reply.render(result); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		if store {
			err := s.db.Update(context.WithoutCancel(r.Context()), func(tx *sql.Tx) error {
				return storeAnswer(tx, dev, key, rec, s.now())
			})
			if err != nil {
				// An answer not kept would not be the answer to a repeat:
				// the terminal hears to retry instead. A refusal is made
				// again; an outcome is on disk, and the repeat finds it
				// through the domain and hears it (as it is then), kept
				// this time. Answering the first bytes now would promise a
				// repeat the very same bytes, which nothing could keep.
				s.log.Error("store idempotent answer", "request_id", ri.ID, "status", rec.status, "err", err)
				p, _ := s.problemFor(r, err)
				p.RequestID = ri.ID
				rec = idemRecord{status: p.Status, contentType: "application/problem+json", body: p.encode()}
			}
		}
		sendAnswer(w, rec)
	})
}

// reply is the orders.Reply of one keyed request: it stores the answer
// in the domain's transaction and keeps it, so that the very bytes stored
// are the bytes sent.
type reply struct {
	device, key, hash string
	shape             answerShape
	now               func() time.Time
	stored            *idemRecord
}

var _ orders.Reply = (*reply)(nil)

// Store renders result as the request's answer and writes it in tx.
func (rp *reply) Store(tx *sql.Tx, result any) error {
	rec, err := rp.render(result)
	if err != nil {
		return err
	}
	if err := storeAnswer(tx, rp.device, rp.key, rec, rp.now()); err != nil {
		return err
	}
	rp.stored = &rec
	return nil
}

func (rp *reply) render(result any) (idemRecord, error) {
	body, err := json.Marshal(result)
	if err != nil {
		return idemRecord{}, err
	}
	rec := idemRecord{hash: rp.hash, status: rp.shape.status, contentType: "application/json", body: append(body, '\n')}
	if rp.shape.location != nil {
		rec.location = rp.shape.location(result)
	}
	return rec, nil
}

func sendAnswer(w http.ResponseWriter, rec idemRecord) {
	if rec.contentType != "" {
		w.Header().Set("Content-Type", rec.contentType)
	}
	if rec.location != "" {
		w.Header().Set("Location", rec.location)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rec.body)))
	w.WriteHeader(rec.status)
	w.Write(rec.body)
}
