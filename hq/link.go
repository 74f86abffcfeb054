package hq

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"storepay/migrations"
	"storepay/saf"
)

// Names shared by stores and headquarters.
const (
	HubDomain      = "hq"
	EventsStream   = "STOREPAY_EVENTS"
	CommandsStream = "STOREPAY_COMMANDS"
	// Actor is who a store's audit log and emergency stop name for a
	// command from headquarters.
	Actor = "headquarters"
)

// HubConsumer names headquarters' durable consumer on a store's stream.
// It carries the store's id because JetStream's acknowledgements travel
// on $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...: with one
// name for every store, headquarters' ack of store A's event 70 reached
// every store's consumer of that name and acknowledged store B's event 70
// too, unseen if B's copy had gone to a pull request that expired; B's
// event was then never delivered again (TestHQChain: headquarters stuck
// short of a store's last events in about 1 run in 10).
func HubConsumer(store string) string { return "hq-" + store }

// EventSubject is the subject of a store's events of one type.
func EventSubject(store, typ string) string { return "storepay.evt." + store + "." + typ }

// CommandSubject is where headquarters publishes a command for one store;
// ChainSubject for every store.
func CommandSubject(store string) string { return "storepay.cmd.store." + store }

// ChainSubject is the subject of commands for the whole chain.
const ChainSubject = "storepay.cmd.all"

var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidStoreID reports whether id can name a store to headquarters: it
// becomes a JetStream domain and a subject token.
func ValidStoreID(id string) bool { return validID.MatchString(id) && id != HubDomain }

// Event is what a store sends: one outbox row.
type Event struct {
	ID      string          `json:"id"`
	StoreID string          `json:"store_id"`
	Seq     int64           `json:"seq"`
	Type    string          `json:"type"`
	At      string          `json:"at"`
	Data    json.RawMessage `json:"data"`
}

// Command is what headquarters sends.
type Command struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"` // estop
	State    string `json:"state,omitempty"`
	Reason   string `json:"reason"`
	Actor    string `json:"actor"` // the headquarters token's name
	IssuedAt string `json:"issued_at"`
}

// LinkConfig is a store's hq block, resolved.
type LinkConfig struct {
	StoreID string
	URLs    []string
	// User and Password authenticate this store's leaf connection.
	User, Password string
	DataDir        string
	// MaxAge and MaxBytes bound the local stream: events older, or beyond
	// the size, are dropped oldest first (documented in docs/hq.md).
	MaxAge   time.Duration
	MaxBytes int64
}

// Defaults for the local stream's bounds.
const (
	DefaultMaxAge   = 60 * 24 * time.Hour
	DefaultMaxBytes = 2 << 30
)

// ParseCredentials reads "user:password" as the store's leaf credentials.
func ParseCredentials(s string) (user, password string, err error) {
	user, password, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || user == "" || password == "" {
		return "", "", errors.New(`credentials must be "user:password"`)
	}
	return user, password, nil
}

// EStopper is the store's emergency stop (saf.Queue).
type EStopper interface {
	SetEStopIf(ctx context.Context, state saf.EStopState, actor, reason string, decide func(tx *sql.Tx, cur saf.EStop) (bool, error)) (saf.EStop, bool, error)
}

// Link is the store side: the embedded leaf server, the relay and the
// command consumer. Open starts it, Close stops it.
type Link struct {
	Config LinkConfig
	DB     *migrations.DB
	EStop  EStopper
	Log    *slog.Logger
	// PollEvery is how often the relay looks for new outbox rows.
	PollEvery time.Duration
	// BeforeDelete, when set, runs after a batch is in the local stream
	// and before its outbox rows are deleted; an error stops the batch
	// there. Tests use it to crash the relay in that window.
	BeforeDelete func() error

	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Enable turns the outbox triggers on (hq block present) or off. Turning
// them on for a database that had them off writes a snapshot of the
// payments and records it holds, so headquarters' view starts complete.
func Enable(ctx context.Context, db *migrations.DB, on bool) error {
	return db.Update(ctx, func(tx *sql.Tx) error {
		if !on {
			if _, err := tx.Exec(`DELETE FROM hq_enabled`); err != nil {
				return fmt.Errorf("hq off: %w", err)
			}
			// No relay will read it: keep no outbox.
			_, err := tx.Exec(`DELETE FROM hq_outbox`)
			return err
		}
		res, err := tx.Exec(`INSERT OR IGNORE INTO hq_enabled (id) VALUES (1)`)
		if err != nil {
			return fmt.Errorf("hq on: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		// Touch every row once so the triggers write it: a snapshot in
		// the very shapes the relay sends.
		for _, q := range []string{
			`INSERT INTO hq_outbox (type, body) SELECT 'payment', json_object(
				'id', id, 'order_id', order_id, 'method', method, 'status', status, 'mode', mode, 'gateway', gateway,
				'amount', amount, 'tip_amount', tip_amount, 'captured_amount', captured_amount,
				'refunded_amount', refunded_amount, 'currency', currency, 'card_brand', card_brand,
				'card_last4', card_last4, 'decline_code', decline_code, 'created_at', created_at, 'updated_at', updated_at)
			 FROM payments ORDER BY created_at`,
			`INSERT INTO hq_outbox (type, body) SELECT 'saf', json_object(
				'id', id, 'payment_id', payment_id, 'gateway', gateway, 'amount', amount, 'currency', currency,
				'status', status, 'card_last4', card_last4, 'attempts', attempts, 'decline_code', decline_code,
				'created_at', created_at, 'updated_at', updated_at)
			 FROM saf_records ORDER BY created_at`,
			`INSERT INTO hq_outbox (type, body) SELECT 'estop', json_object('state', state, 'reason', reason, 'actor', actor, 'at', at) FROM estop`,
			`INSERT INTO hq_outbox (type, body) SELECT 'gateway', json_object('name', name, 'state', 'disabled', 'reason', reason, 'actor', actor, 'at', at) FROM gateway_disabled`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("hq snapshot: %w", err)
			}
		}
		return nil
	})
}

func (l *Link) log() *slog.Logger {
	if l.Log == nil {
		return slog.Default()
	}
	return l.Log
}

// Open starts the embedded NATS server as a leaf node of headquarters,
// creates the local stream and starts the relay and the command
// consumer. It does not wait for headquarters.
func (l *Link) Open() error {
	c := l.Config
	if !ValidStoreID(c.StoreID) {
		return fmt.Errorf("hq: store id %q must be 1-64 letters, digits, - or _ (and not %q)", c.StoreID, HubDomain)
	}
	var remotes []*url.URL
	for _, s := range c.URLs {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("hq: url %q: %w", s, err)
		}
		u.User = url.UserPassword(c.User, c.Password)
		remotes = append(remotes, u)
	}
	opts := &server.Options{
		ServerName:      c.StoreID,
		DontListen:      true,
		JetStream:       true,
		JetStreamDomain: c.StoreID,
		StoreDir:        c.DataDir,
		NoSigs:          true,
		NoLog:           true,
		LeafNode: server.LeafNodeOpts{
			ReconnectInterval: 500 * time.Millisecond,
			Remotes:           []*server.RemoteLeafOpts{{URLs: remotes, NoRandomize: true}},
		},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("hq: nats server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("hq: nats server did not start")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("storepay-relay"), nats.MaxReconnects(-1))
	if err != nil {
		srv.Shutdown()
		return fmt.Errorf("hq: connect to the embedded server: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return fmt.Errorf("hq: jetstream: %w", err)
	}
	maxAge, maxBytes := c.MaxAge, c.MaxBytes
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: EventsStream, Subjects: []string{"storepay.evt." + c.StoreID + ".>"},
		Storage: jetstream.FileStorage, MaxAge: maxAge, MaxBytes: maxBytes, Discard: jetstream.DiscardOld,
		// Covers a crash between publishing and deleting the outbox rows.
		Duplicates: time.Hour,
	})
	cancel()
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return fmt.Errorf("hq: local stream: %w", err)
	}
	l.srv, l.nc, l.js = srv, nc, js
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.relay() }()
	go func() { defer l.wg.Done(); l.commands() }()
	return nil
}

// Close stops the relay and the consumer and shuts the server down.
// Whatever the relay had not copied stays in the outbox for next time.
func (l *Link) Close() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.wg.Wait()
	l.nc.Close()
	l.srv.Shutdown()
	l.srv.WaitForShutdown()
}

// Connected reports whether the leaf link to headquarters is up.
func (l *Link) Connected() bool { return l.srv != nil && l.srv.NumLeafNodes() > 0 }

func (l *Link) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// relay copies the outbox to the local stream, oldest first, and deletes
// what the stream acknowledged. A crash between the two republishes a
// batch under the same Nats-Msg-Id, which the stream drops.
func (l *Link) relay() {
	every := l.PollEvery
	if every <= 0 {
		every = 100 * time.Millisecond
	}
	for l.ctx.Err() == nil {
		n, err := l.RelayOnce(l.ctx)
		if err != nil && l.ctx.Err() == nil {
			l.log().Warn("hq relay", "err", err)
			if !l.sleep(time.Second) {
				return
			}
			continue
		}
		if n == 0 && !l.sleep(every) {
			return
		}
	}
}

// RelayOnce relays one batch of the outbox and returns how many events
// it moved.
func (l *Link) RelayOnce(ctx context.Context) (int, error) {
	rows, err := l.DB.Read().QueryContext(ctx, `SELECT seq, id, type, body, at FROM hq_outbox ORDER BY seq LIMIT 512`)
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	var evs []Event
	for rows.Next() {
		var e Event
		var body string
		if err := rows.Scan(&e.Seq, &e.ID, &e.Type, &body, &e.At); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read outbox: %w", err)
		}
		e.StoreID, e.Data = l.Config.StoreID, json.RawMessage(body)
		evs = append(evs, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	if len(evs) == 0 {
		return 0, nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		m := nats.NewMsg(EventSubject(l.Config.StoreID, e.Type))
		m.Data = b
		m.Header.Set(jetstream.MsgIDHeader, e.ID)
		f, err := l.js.PublishMsgAsync(m)
		if err != nil {
			return 0, fmt.Errorf("publish event %s: %w", e.ID, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, fmt.Errorf("publish event %s: %w", evs[i].ID, err)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if l.BeforeDelete != nil {
		if err := l.BeforeDelete(); err != nil {
			return 0, err
		}
	}
	last := evs[len(evs)-1].Seq
	if err := l.DB.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM hq_outbox WHERE seq <= ?`, last)
		return err
	}); err != nil {
		return 0, fmt.Errorf("delete relayed events: %w", err)
	}
	return len(evs), nil
}

// commands reads this store's commands from headquarters, with a durable
// consumer on the hub that remembers what it has delivered: commands
// published while the link was down arrive when it returns.
func (l *Link) commands() {
	hub, err := jetstream.NewWithDomain(l.nc, HubDomain)
	if err != nil {
		l.log().Error("hq commands", "err", err)
		return
	}
	id := l.Config.StoreID
	for l.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
		cons, err := hub.CreateOrUpdateConsumer(ctx, CommandsStream, jetstream.ConsumerConfig{
			Durable: "store-" + id, FilterSubjects: []string{ChainSubject, CommandSubject(id)},
			AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			// A command handed to a pull request that died with the
			// link is lost until AckWait: keep it short (applying is
			// milliseconds, and a redelivery is recognised by its id).
			AckWait: 3 * time.Second, MaxAckPending: 1,
		})
		cancel()
		if err != nil {
			l.log().Debug("hq commands: consumer not reachable", "err", err)
			if !l.sleep(300 * time.Millisecond) {
				return
			}
			continue
		}
		for l.ctx.Err() == nil {
			fctx, fcancel := context.WithTimeout(l.ctx, time.Second)
			batch, err := cons.Fetch(16, jetstream.FetchContext(fctx))
			if err != nil {
				fcancel()
				l.log().Debug("hq commands: fetch", "err", err)
				break
			}
			// Apply each command as it arrives, not when the batch ends.
			n := 0
			for m := range batch.Messages() {
				n++
				if err := l.apply(m.Data()); err != nil {
					l.log().Warn("hq command not applied; it will come again", "err", err)
					m.Nak()
					continue
				}
				m.Ack()
			}
			fcancel()
			l.log().Debug("hq commands: fetched", "n", n, "err", batch.Error())
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
				break
			}
		}
		if !l.sleep(300 * time.Millisecond) {
			return
		}
	}
}

// apply carries out one command once: the hq_commands row is written in
// the transaction that applies it.
//
// How headquarters and a local manager combine: a pause or stop from
// headquarters always applies (the stricter state wins in an incident);
// a go from headquarters lifts only a stop that headquarters set, never
// one a manager set locally (result kept_local). A manager can always
// stop locally, and may also resume locally: the last action wins, and
// every change reaches headquarters as an estop event.
func (l *Link) apply(data []byte) error {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil || c.ID == "" {
		l.log().Warn("hq command unreadable; dropped", "err", err)
		return nil
	}
	now := migrations.FormatTime(time.Now())
	record := func(tx *sql.Tx, result string) (bool, error) {
		res, err := tx.Exec(`INSERT OR IGNORE INTO hq_commands (id, kind, actor, reason, result, applied_at) VALUES (?, ?, ?, ?, ?, ?)`,
			c.ID, c.Kind, c.Actor, c.Reason, result, now)
		if err != nil {
			return false, err
		}
		n, _ := res.RowsAffected()
		return n == 1, nil
	}
	ctx := l.ctx
	switch c.Kind {
	case "estop":
		state := saf.EStopState(c.State)
		if !state.Valid() {
			return l.DB.Update(ctx, func(tx *sql.Tx) error { _, err := record(tx, "rejected: unknown state"); return err })
		}
		reason := c.Reason
		_, applied, err := l.EStop.SetEStopIf(ctx, state, Actor, reason, func(tx *sql.Tx, cur saf.EStop) (bool, error) {
			var seen int
			if err := tx.QueryRow(`SELECT count(*) FROM hq_commands WHERE id = ?`, c.ID).Scan(&seen); err != nil {
				return false, err
			}
			if seen > 0 {
				return false, nil
			}
			if state == saf.Go && cur.State != saf.Go && cur.Actor != Actor {
				_, err := record(tx, "kept_local")
				return false, err
			}
			_, err := record(tx, "applied")
			return err == nil, err
		})
		if err != nil {
			return err
		}
		if applied {
			l.log().Warn("emergency stop set by headquarters", "state", state, "by", c.Actor, "reason", reason, "command", c.ID)
		}
		return nil
	default:
		return l.DB.Update(ctx, func(tx *sql.Tx) error { _, err := record(tx, "rejected: unknown kind "+c.Kind); return err })
	}
}

// StreamMessages is how many events the local stream holds.
func (l *Link) StreamMessages(ctx context.Context) (uint64, error) {
	st, err := l.js.Stream(ctx, EventsStream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
