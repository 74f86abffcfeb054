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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"storepay/devices"
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
//
// In a cluster of hubs each node has its own consumer (its own complete
// view): "hq-<node>-<store>", unambiguous because a node name has no
// dash.
func HubConsumer(store, node string) string {
	if node == "" {
		return "hq-" + store
	}
	return "hq-" + node + "-" + store
}

// StoreConsumer names a store's durable consumer on headquarters'
// commands stream.
func StoreConsumer(store string) string { return "store-" + store }

// StoreInbox is the inbox prefix of a store's connection: the replies
// headquarters may send it. HubInbox is the prefix of headquarters'
// connection to one store: the answers that store may send. Distinct per
// store (an id has no dot, so no store can name another's prefix) so that
// a leaf's permissions can name them (Hub.leafUsers).
func StoreInbox(store string) string { return "_INBOX_STORE." + store }

// HubInbox: see [StoreInbox].
func HubInbox(store string) string { return "_INBOX_HQ." + store }

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
	ID   string `json:"id"`
	Kind string `json:"kind"` // estop, gateway or hot_card
	// State is an estop command's state (go, pause, stop).
	State string `json:"state,omitempty"`
	// Gateway is the bank a gateway command names.
	Gateway string `json:"gateway,omitempty"`
	// Card is a hot_card command's entry, masked: 400000******9979.
	Card string `json:"card,omitempty"`
	// Action is disable or enable (gateway), add or remove (hot_card).
	Action   string `json:"action,omitempty"`
	Reason   string `json:"reason"`
	Actor    string `json:"actor"` // the headquarters token's name
	IssuedAt string `json:"issued_at"`
}

// Command kinds and actions.
const (
	KindEStop   = "estop"
	KindGateway = "gateway"
	KindHotCard = "hot_card"

	ActionDisable = "disable"
	ActionEnable  = "enable"
	ActionAdd     = "add"
	ActionRemove  = "remove"
)

// Check reports what is wrong with a command headquarters is about to
// send, in words for its API; nil when it can be sent.
func (c Command) Check() error {
	switch c.Kind {
	case KindEStop:
		if !saf.EStopState(c.State).Valid() {
			return errors.New("state must be go, pause or stop")
		}
	case KindGateway:
		if !validID.MatchString(c.Gateway) {
			return errors.New("gateway must be a bank's name (1-64 letters, digits, - or _)")
		}
		if c.Action != ActionDisable && c.Action != ActionEnable {
			return errors.New("action must be disable or enable")
		}
	case KindHotCard:
		if !saf.ValidHotCard(c.Card) {
			// Never echo it: it may be a full card number.
			return errors.New("card must be masked as its first six and last four digits, e.g. 400000******9979")
		}
		if c.Action != ActionAdd && c.Action != ActionRemove {
			return errors.New("action must be add or remove")
		}
	default:
		return fmt.Errorf("unknown command kind %q", c.Kind)
	}
	if strings.TrimSpace(c.Reason) == "" || len(c.Reason) > 500 {
		return errors.New("reason is required (at most 500 characters)")
	}
	return nil
}

// GatewayControl is the store's bank router, for gateway commands.
type GatewayControl interface {
	Banks() []string
	Disable(ctx context.Context, name string) error
	Enable(ctx context.Context, name string) error
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
	// SAFMaxAge is how long an offline payment may wait before it
	// expires (the store's offline.max_age): headquarters counts the
	// records near it as expiring soon.
	SAFMaxAge time.Duration
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
	// Gateways carries out gateway commands; without it they are
	// answered "rejected".
	Gateways GatewayControl
	Log      *slog.Logger
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

	statesMu sync.Mutex
	states   map[string]string // bank → its latest live state, not yet in the outbox
}

// GatewayState notes a bank's live state (its circuit breaker and
// probes: closed, half_open, open, disabled) for headquarters. It has
// the router's OnStateChange signature and never blocks: the relay
// writes the latest state of each bank to the outbox on its next pass.
func (l *Link) GatewayState(bank, _, to string) {
	l.statesMu.Lock()
	defer l.statesMu.Unlock()
	if l.states == nil {
		l.states = map[string]string{}
	}
	l.states[bank] = to
}

// flushStates writes the noted bank states as one "status" event.
func (l *Link) flushStates(ctx context.Context) error {
	l.statesMu.Lock()
	states := l.states
	l.states = nil
	l.statesMu.Unlock()
	if len(states) == 0 {
		return nil
	}
	type gw struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	var gws []gw
	for name, st := range states {
		gws = append(gws, gw{name, st})
	}
	slices.SortFunc(gws, func(a, b gw) int { return strings.Compare(a.Name, b.Name) })
	body, err := json.Marshal(map[string]any{"gateways": gws, "saf_max_age_seconds": int64(l.Config.SAFMaxAge / time.Second)})
	if err == nil {
		err = l.DB.Update(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO hq_outbox (type, body) SELECT 'status', ? WHERE EXISTS (SELECT 1 FROM hq_enabled)`, string(body))
			return err
		})
	}
	if err != nil {
		// Keep what is not newer for the next pass.
		l.statesMu.Lock()
		for name, st := range states {
			if _, newer := l.states[name]; !newer {
				if l.states == nil {
					l.states = map[string]string{}
				}
				l.states[name] = st
			}
		}
		l.statesMu.Unlock()
		return fmt.Errorf("bank states: %w", err)
	}
	return nil
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
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("storepay-relay"), nats.MaxReconnects(-1),
		nats.CustomInboxPrefix(StoreInbox(c.StoreID)))
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
	if err := l.flushStates(ctx); err != nil {
		return 0, err
	}
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
			Durable: StoreConsumer(id), FilterSubjects: []string{ChainSubject, CommandSubject(id)},
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
// the transaction that applies it, with the change and its audit line.
//
// How headquarters and a local manager combine (docs/hq.md): what makes
// the store stricter always applies (an estop pause or stop, a bank
// disabled, a card added to the hot list); what lifts a restriction
// lifts only one headquarters set, never one a manager set locally
// (result kept_local). A manager can always stop locally, and may also
// resume locally: the last action wins, and every change reaches
// headquarters as an event.
func (l *Link) apply(data []byte) error {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil || c.ID == "" {
		l.log().Warn("hq command unreadable; dropped", "err", err)
		return nil
	}
	if err := c.Check(); err != nil {
		return l.DB.Update(l.ctx, func(tx *sql.Tx) error {
			_, err := recordCommand(tx, c, "rejected: "+err.Error())
			return err
		})
	}
	switch c.Kind {
	case KindEStop:
		return l.applyEStop(c)
	case KindGateway:
		return l.applyGateway(c)
	default:
		return l.applyHotCard(c)
	}
}

// recordCommand writes the command's row; false means it was applied
// before (a redelivery).
func recordCommand(tx *sql.Tx, c Command, result string) (bool, error) {
	res, err := tx.Exec(`INSERT OR IGNORE INTO hq_commands (id, kind, actor, reason, result, applied_at) VALUES (?, ?, ?, ?, ?, ?)`,
		c.ID, c.Kind, c.Actor, c.Reason, result, migrations.FormatTime(time.Now()))
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func seenCommand(tx *sql.Tx, id string) (bool, error) {
	var n int
	err := tx.QueryRow(`SELECT count(*) FROM hq_commands WHERE id = ?`, id).Scan(&n)
	return n > 0, err
}

// detail is what the store's audit line says of a command's origin.
func (c Command) detail() string { return "headquarters command " + c.ID + " by " + c.Actor }

func (l *Link) applyEStop(c Command) error {
	state := saf.EStopState(c.State)
	_, applied, err := l.EStop.SetEStopIf(l.ctx, state, Actor, c.Reason, func(tx *sql.Tx, cur saf.EStop) (bool, error) {
		if seen, err := seenCommand(tx, c.ID); err != nil || seen {
			return false, err
		}
		if state == saf.Go && cur.State != saf.Go && cur.Actor != Actor {
			_, err := recordCommand(tx, c, "kept_local")
			return false, err
		}
		_, err := recordCommand(tx, c, "applied")
		return err == nil, err
	})
	if err != nil {
		return err
	}
	if applied {
		l.log().Warn("emergency stop set by headquarters", "state", state, "by", c.Actor, "reason", c.Reason, "command", c.ID)
	}
	return nil
}

// applyGateway takes a bank out of service or back, as a manager's
// disable and enable do (gateway_disabled, audited), then tells the
// router. A crash between the two is mended at start, when the router
// reads gateway_disabled again.
func (l *Link) applyGateway(c Command) error {
	if l.Gateways == nil || !slices.Contains(l.Gateways.Banks(), c.Gateway) {
		return l.DB.Update(l.ctx, func(tx *sql.Tx) error {
			_, err := recordCommand(tx, c, "rejected: this store has no gateway "+c.Gateway)
			return err
		})
	}
	act := false
	err := l.DB.Update(l.ctx, func(tx *sql.Tx) error {
		act = false
		if seen, err := seenCommand(tx, c.ID); err != nil || seen {
			return err
		}
		var actor string
		err := tx.QueryRow(`SELECT actor FROM gateway_disabled WHERE name = ?`, c.Gateway).Scan(&actor)
		disabled := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		now := time.Now()
		result := "applied"
		switch {
		case c.Action == ActionDisable && disabled:
			// Already out of service; a manager's disable stays theirs.
		case c.Action == ActionDisable:
			if _, err := tx.Exec(`INSERT INTO gateway_disabled (name, reason, actor, at) VALUES (?,?,?,?)`,
				c.Gateway, c.Reason, Actor, migrations.FormatTime(now)); err != nil {
				return err
			}
			act = true
		case !disabled:
		case actor != Actor:
			result = "kept_local"
		default:
			if _, err := tx.Exec(`DELETE FROM gateway_disabled WHERE name = ?`, c.Gateway); err != nil {
				return err
			}
			act = true
		}
		if _, err := recordCommand(tx, c, result); err != nil {
			return err
		}
		if !act {
			return nil
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: Actor, Action: "gateway." + c.Action, Target: c.Gateway,
			Reason: c.Reason, Detail: c.detail()})
	})
	if err != nil || !act {
		return err
	}
	l.log().Warn("bank "+c.Action+"d by headquarters", "gateway", c.Gateway, "by", c.Actor, "reason", c.Reason, "command", c.ID)
	if c.Action == ActionDisable {
		return l.routerErr(l.Gateways.Disable(l.ctx, c.Gateway))
	}
	return l.routerErr(l.Gateways.Enable(l.ctx, c.Gateway))
}

// routerErr logs a router that refused what the database already holds:
// the command is applied (its row is written), and a restart aligns the
// router with gateway_disabled.
func (l *Link) routerErr(err error) error {
	if err != nil {
		l.log().Error("hq gateway command: the router did not follow; a restart will", "err", err)
	}
	return nil
}

// applyHotCard adds a card to the hot list or takes it off. Entries come
// only from headquarters (the config's list is the store's own), so a
// remove removes.
func (l *Link) applyHotCard(c Command) error {
	entry := c.Card[:6] + c.Card[len(c.Card)-4:]
	return l.DB.Update(l.ctx, func(tx *sql.Tx) error {
		if seen, err := seenCommand(tx, c.ID); err != nil || seen {
			return err
		}
		now := time.Now()
		var err error
		if c.Action == ActionAdd {
			_, err = tx.Exec(`INSERT INTO hot_cards (entry, masked, actor, reason, added_at) VALUES (?,?,?,?,?)
				ON CONFLICT (entry) DO UPDATE SET reason = excluded.reason, added_at = excluded.added_at`,
				entry, c.Card, Actor, c.Reason, migrations.FormatTime(now))
		} else {
			_, err = tx.Exec(`DELETE FROM hot_cards WHERE entry = ?`, entry)
		}
		if err != nil {
			return err
		}
		if _, err := recordCommand(tx, c, "applied"); err != nil {
			return err
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: Actor, Action: "hot_card." + c.Action, Target: c.Card,
			Reason: c.Reason, Detail: c.detail()})
	})
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
