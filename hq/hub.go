package hq

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"storepay/migrations"
)

// HubStore is a store headquarters accepts, with its leaf credentials.
type HubStore struct {
	ID       string
	Password string
}

// HubConfig is headquarters' config, resolved.
type HubConfig struct {
	LeafListen string // host:port for the stores' leaf connections
	DataDir    string
	Stores     []HubStore
	// Cluster, when set, makes this hub one node of a cluster of hubs
	// (three in production, docs/hq.md): JetStream replicates the
	// commands stream on every node, and each node keeps its own
	// complete view of every store.
	Cluster *HubCluster
}

// HubCluster is one node's view of a headquarters cluster.
type HubCluster struct {
	Name   string   // the cluster's name, the same on every node
	Node   string   // this node's name: letters and digits
	Listen string   // host:port for the other nodes' routes
	Routes []string // the other nodes' routes, nats-route://host:port
	// Nodes names every node, this one included: a store's leaf
	// permissions allow the acks of each node's consumer on its stream.
	Nodes []string
}

var validNode = regexp.MustCompile(`^[A-Za-z0-9]{1,32}$`)

// ValidNode reports whether s can name a node of a hub cluster: it
// becomes part of consumer names, so it holds no - or _.
func ValidNode(s string) bool { return validNode.MatchString(s) }

// node is this hub's node name ("" for a hub alone).
func (h *Hub) node() string {
	if h.Config.Cluster == nil {
		return ""
	}
	return h.Config.Cluster.Node
}

// nodes are every node's names ("" alone for a hub alone).
func (h *Hub) nodes() []string {
	if h.Config.Cluster == nil {
		return []string{""}
	}
	return h.Config.Cluster.Nodes
}

// Hub is headquarters: the NATS server the stores link to, one ingest
// worker per store feeding the chain view, and the commands stream.
type Hub struct {
	Config HubConfig
	DB     *sql.DB
	Log    *slog.Logger
	// Now is the clock of the view's "expiring soon". Nil means time.Now.
	Now func() time.Time

	srv      *server.Server
	internal string // headquarters' own user's password, new at each start
	nc       *nats.Conn
	js       jetstream.JetStream
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func (h *Hub) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Hub) log() *slog.Logger {
	if h.Log == nil {
		return slog.Default()
	}
	return h.Log
}

// leafUsers gives each store its own leaf user, allowed only its own
// traffic. Permissions are written from the store's side: publish is what
// it may send headquarters, subscribe what headquarters may send it.
//
// A store sends: its command consumer's JetStream calls and acks on the
// hub, and its answers to headquarters' requests (events pulled, API
// replies) on the inboxes headquarters uses for that store. A store
// receives: headquarters' calls into its own JetStream domain and acks of
// its own events, and replies on its own inboxes. Another store's
// commands, events, acks and JetStream are out of reach, and so are the
// other stores' inboxes (TestLeafPermissions).
func (h *Hub) leafUsers() []*server.User {
	var users []*server.User
	for _, s := range h.Config.Stores {
		consumer := CommandsStream + "." + StoreConsumer(s.ID)
		users = append(users, &server.User{Username: s.ID, Password: s.Password, Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{
				"$JS." + HubDomain + ".API.CONSUMER.CREATE." + consumer,
				"$JS." + HubDomain + ".API.CONSUMER.CREATE." + consumer + ".>",
				"$JS." + HubDomain + ".API.CONSUMER.DURABLE.CREATE." + consumer,
				"$JS." + HubDomain + ".API.CONSUMER.INFO." + consumer,
				"$JS." + HubDomain + ".API.CONSUMER.MSG.NEXT." + consumer,
				"$JS.ACK." + consumer + ".>",
				HubInbox(s.ID) + ".>",
			}},
			Subscribe: &server.SubjectPermission{Allow: append([]string{
				"$JS." + s.ID + ".API.>",
				StoreInbox(s.ID) + ".>",
			}, h.eventAcks(s.ID)...)},
		}})
	}
	return users
}

// eventAcks are the subjects of every node's acks of a store's events.
func (h *Hub) eventAcks(store string) []string {
	var out []string
	for _, n := range h.nodes() {
		out = append(out, "$JS.ACK."+EventsStream+"."+HubConsumer(store, n)+".>")
	}
	return out
}

// Open starts the hub's NATS server and JetStream, the commands stream
// and the ingest workers.
func (h *Hub) Open() error {
	host, portS, err := net.SplitHostPort(h.Config.LeafListen)
	if err != nil {
		return fmt.Errorf("hq: leafnodes_listen: %w", err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return fmt.Errorf("hq: leafnodes_listen: %w", err)
	}
	if port == 0 {
		// Pick a free port now so that LeafAddr can name it (tests).
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return fmt.Errorf("hq: leafnodes_listen: %w", err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		h.Config.LeafListen = net.JoinHostPort(host, strconv.Itoa(port))
	}
	h.internal = uuid.NewString() + uuid.NewString()
	name := HubDomain
	if c := h.Config.Cluster; c != nil {
		name = c.Node
	}
	opts := &server.Options{
		ServerName:      name,
		DontListen:      true,
		JetStream:       true,
		JetStreamDomain: HubDomain,
		StoreDir:        h.Config.DataDir,
		NoSigs:          true,
		NoLog:           true,
		// Stores dial only the URLs in their config: advertising our own
		// address would let a store bypass the path it was given.
		// The stores' users are the server's users, not leafnodes{}
		// users: the server applies a user's permissions to a leaf
		// connection only when the leaf authenticates as one of its
		// users (leafnode users carry no permissions). Headquarters'
		// own in-process connections use a user of their own.
		Users:    append(h.leafUsers(), &server.User{Username: internalUser, Password: h.internal}),
		LeafNode: server.LeafNodeOpts{Host: host, Port: port, NoAdvertise: true},
	}
	replicas := 1
	if c := h.Config.Cluster; c != nil {
		if err := clusterOptions(opts, c); err != nil {
			return err
		}
		replicas = min(3, len(c.Nodes))
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
	nc, err := h.connect(srv, "storepay-hq")
	if err != nil {
		srv.Shutdown()
		return fmt.Errorf("hq: connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return err
	}
	// A cluster's nodes start one by one: the stream can be created once
	// a JetStream leader is elected, which needs most of the nodes.
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: CommandsStream, Subjects: []string{"storepay.cmd.>"}, Storage: jetstream.FileStorage,
			MaxAge: 365 * 24 * time.Hour, Duplicates: time.Hour, Replicas: replicas,
		})
		cancel()
		if err == nil || h.Config.Cluster == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond) // waiting for the other nodes
	}
	if err != nil {
		if c := h.Config.Cluster; c != nil {
			err = fmt.Errorf("routes to %d of the %d other nodes up: %w", srv.NumRoutes(), len(c.Nodes)-1, err)
		}
		nc.Close()
		srv.Shutdown()
		return fmt.Errorf("hq: commands stream: %w", err)
	}
	h.srv, h.nc, h.js = srv, nc, js
	h.ctx, h.cancel = context.WithCancel(context.Background())
	for _, s := range h.Config.Stores {
		if _, err := h.DB.Exec(`INSERT OR IGNORE INTO stores (store_id) VALUES (?)`, s.ID); err != nil {
			h.Close()
			return fmt.Errorf("hq: store %s: %w", s.ID, err)
		}
		h.wg.Add(1)
		go func(id string) { defer h.wg.Done(); h.ingest(id) }(s.ID)
	}
	h.wg.Add(1)
	go func() { defer h.wg.Done(); h.learnCommands() }()
	return nil
}

// internalUser is headquarters' own user on its server.
const internalUser = "storepay-hq"

// connect opens an in-process connection as headquarters' own user.
func (h *Hub) connect(srv *server.Server, name string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(srv), nats.Name(name),
		nats.UserInfo(internalUser, h.internal), nats.MaxReconnects(-1)}, opts...)...)
}

// LeafAddr is where stores connect (useful when listening on port 0).
func (h *Hub) LeafAddr() string { return h.Config.LeafListen }

// Close stops the workers and the server.
func (h *Hub) Close() {
	if h.cancel != nil {
		h.cancel()
	}
	h.wg.Wait()
	if h.nc != nil {
		h.nc.Close()
	}
	if h.srv != nil {
		h.srv.Shutdown()
		h.srv.WaitForShutdown()
	}
}

// Links reports, per store id, whether its leaf connection is up.
func (h *Hub) Links() map[string]bool {
	up := map[string]bool{}
	if h.srv == nil {
		return up // not started: no store is linked
	}
	lz, err := h.srv.Leafz(nil)
	if err != nil {
		return up
	}
	for _, l := range lz.Leafs {
		up[l.Name] = true
	}
	return up
}

func (h *Hub) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ingest reads one store's stream with headquarters' durable consumer on
// it, through the leaf link, commits each batch to the view and only
// then acknowledges it: a crash in between redelivers, and the event ids
// keep the view from counting anything twice.
func (h *Hub) ingest(store string) {
	// Its own connection, whose inboxes are the ones this store may
	// answer on (see leafUsers).
	nc, err := h.connect(h.srv, "storepay-hq-"+store, nats.CustomInboxPrefix(HubInbox(store)))
	if err != nil {
		h.log().Error("hq ingest", "store", store, "err", err)
		return
	}
	defer nc.Close()
	sjs, err := jetstream.NewWithDomain(nc, store)
	if err != nil {
		h.log().Error("hq ingest", "store", store, "err", err)
		return
	}
	for h.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		cons, err := sjs.CreateOrUpdateConsumer(ctx, EventsStream, jetstream.ConsumerConfig{
			Durable: HubConsumer(store, h.node()), AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			// Explicit acks, not ack-all: a message the server sent while
			// a fetch expired never reaches us, and a later ack-all would
			// acknowledge it unseen. Unacknowledged ones come again after
			// AckWait.
			AckWait: 5 * time.Second, MaxAckPending: 4096,
		})
		cancel()
		if err != nil {
			h.log().Debug("hq ingest: store stream not reachable", "store", store, "err", err)
			if !h.sleep(500 * time.Millisecond) {
				return
			}
			continue
		}
		for h.ctx.Err() == nil {
			fctx, fcancel := context.WithTimeout(h.ctx, 2*time.Second)
			batch, err := cons.Fetch(512, jetstream.FetchContext(fctx))
			if err != nil {
				fcancel()
				h.log().Debug("hq ingest: fetch", "store", store, "err", err)
				break
			}
			var msgs []jetstream.Msg
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			fcancel()
			if len(msgs) > 0 {
				if err := h.applyBatch(store, msgs); err != nil {
					h.log().Warn("hq view update failed; the batch will come again", "store", store, "err", err)
					// Redeliver now, not after the ack wait.
					for _, m := range msgs {
						m.Nak()
					}
					break
				}
				for _, m := range msgs {
					m.Ack()
				}
			}
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
				break
			}
		}
		if !h.sleep(200 * time.Millisecond) {
			return
		}
	}
}

func (h *Hub) applyBatch(store string, msgs []jetstream.Msg) error {
	tx, err := h.DB.BeginTx(h.ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, m := range msgs {
		var e Event
		if err := json.Unmarshal(m.Data(), &e); err != nil || e.ID == "" {
			h.log().Warn("hq: unreadable event dropped", "store", store, "err", err)
			continue
		}
		if e.StoreID != store {
			// A store's stream holds only its own subjects; anything
			// else is not trusted.
			h.log().Warn("hq: event for another store dropped", "store", store, "claims", e.StoreID)
			continue
		}
		res, err := tx.Exec(`INSERT OR IGNORE INTO events (id, store_id, seq, type, at, body) VALUES (?, ?, ?, ?, ?, ?)`,
			e.ID, store, e.Seq, e.Type, e.At, string(e.Data))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // seen before
		}
		if err := applyEvent(tx, store, e); err != nil {
			return fmt.Errorf("event %s: %w", e.ID, err)
		}
		if _, err := tx.Exec(`UPDATE stores SET last_event_at = max(last_event_at, ?), last_seq = max(last_seq, ?), events = events + 1 WHERE store_id = ?`,
			e.At, e.Seq, store); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// applyEvent folds one event into the view. A redelivered event can
// arrive after newer ones, so payments, SAF records and the estop keep
// the seq of the event that set them and only a newer one changes them.
func applyEvent(tx *sql.Tx, store string, e Event) error {
	var err error
	d := string(e.Data)
	switch e.Type {
	case "payment":
		_, err = tx.Exec(`INSERT INTO payments (seq, store_id, id, status, method, mode, gateway, amount, tip_amount, captured_amount,
			refunded_amount, currency, card_brand, card_last4, decline_code, created_at, updated_at)
			SELECT ?, ?, j->>'id', j->>'status', j->>'method', j->>'mode', j->>'gateway', j->>'amount', j->>'tip_amount',
			  j->>'captured_amount', j->>'refunded_amount', j->>'currency', j->>'card_brand', j->>'card_last4',
			  j->>'decline_code', j->>'created_at', j->>'updated_at' FROM (SELECT json(?) AS j) WHERE true
			ON CONFLICT (store_id, id) DO UPDATE SET status=excluded.status, mode=excluded.mode, gateway=excluded.gateway,
			  amount=excluded.amount, tip_amount=excluded.tip_amount, captured_amount=excluded.captured_amount,
			  refunded_amount=excluded.refunded_amount, decline_code=excluded.decline_code, updated_at=excluded.updated_at,
			  seq=excluded.seq WHERE excluded.seq > payments.seq`, e.Seq, store, d)
	case "saf":
		_, err = tx.Exec(`INSERT INTO saf (seq, store_id, id, payment_id, status, gateway, amount, currency, card_last4, decline_code, created_at, updated_at)
			SELECT ?, ?, j->>'id', j->>'payment_id', j->>'status', j->>'gateway', j->>'amount', j->>'currency', j->>'card_last4',
			  j->>'decline_code', j->>'created_at', j->>'updated_at' FROM (SELECT json(?) AS j) WHERE true
			ON CONFLICT (store_id, id) DO UPDATE SET status=excluded.status, gateway=excluded.gateway,
			  decline_code=excluded.decline_code, updated_at=excluded.updated_at,
			  seq=excluded.seq WHERE excluded.seq > saf.seq`, e.Seq, store, d)
	case "estop":
		_, err = tx.Exec(`UPDATE stores SET estop_state = json_extract(?1, '$.state'), estop_reason = json_extract(?1, '$.reason'),
			estop_actor = json_extract(?1, '$.actor'), estop_at = json_extract(?1, '$.at'), estop_seq = ?3 WHERE store_id = ?2 AND estop_seq < ?3`, d, store, e.Seq)
	case "gateway":
		_, err = tx.Exec(`INSERT INTO gateways (store_id, name, state, reason, at)
			SELECT ?, j->>'name', j->>'state', coalesce(j->>'reason', ''), coalesce(j->>'at', '') FROM (SELECT json(?) AS j) WHERE true
			ON CONFLICT (store_id, name) DO UPDATE SET state=excluded.state, reason=excluded.reason, at=excluded.at`, store, d)
	case "status":
		// A snapshot of the banks' live states (circuit breakers, probes)
		// and the store's offline max age.
		_, err = tx.Exec(`INSERT INTO gateways (store_id, name, state, reason, at)
			SELECT ?, g.value->>'name', g.value->>'state', '', ? FROM json_each(json(?), '$.gateways') g
			WHERE true ON CONFLICT (store_id, name) DO UPDATE SET state=excluded.state, at=excluded.at`, store, e.At, d)
		if err == nil {
			_, err = tx.Exec(`UPDATE stores SET saf_max_age_seconds = coalesce(json_extract(?, '$.saf_max_age_seconds'), saf_max_age_seconds)
				WHERE store_id = ? AND json_extract(?, '$.saf_max_age_seconds') > 0`, d, store, d)
		}
	case "reconciliation":
		_, err = tx.Exec(`INSERT INTO reconciliations (store_id, date, run_id, status, summary, finished_at)
			SELECT ?, j->>'date', j->>'run_id', j->>'status', json(j->'summary'), j->>'finished_at' FROM (SELECT json(?) AS j) WHERE true
			ON CONFLICT (store_id, date) DO UPDATE SET run_id=excluded.run_id, status=excluded.status,
			  summary=excluded.summary, finished_at=excluded.finished_at`, store, d)
	case "device":
		_, err = tx.Exec(`INSERT INTO devices (store_id, id, name, role, state, at)
			SELECT ?, j->>'id', j->>'name', j->>'role', j->>'state', j->>'at' FROM (SELECT json(?) AS j) WHERE true
			ON CONFLICT (store_id, id) DO UPDATE SET state=excluded.state, at=excluded.at`, store, d)
	case "command":
		_, err = tx.Exec(`INSERT INTO command_results (command_id, store_id, result, applied_at)
			SELECT j->>'id', ?, j->>'result', j->>'applied_at' FROM (SELECT json(?) AS j)
			WHERE true ON CONFLICT DO NOTHING`, store, d)
	}
	return err
}

// clusterOptions makes the server one node of the hubs' cluster.
func clusterOptions(opts *server.Options, c *HubCluster) error {
	host, portS, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("hq: cluster.listen: %w", err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return fmt.Errorf("hq: cluster.listen: %w", err)
	}
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
	// nats-server starts routing only once its client listener is up:
	// a cluster node listens for clients on a random loopback port
	// (every user there needs its password, as on the leaf port).
	opts.DontListen, opts.Host, opts.Port = false, "127.0.0.1", server.RANDOM_PORT
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return fmt.Errorf("hq: cluster.routes: %q: %w", r, err)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// learnCommands records in this node's view every command any node
// sent, read from the replicated commands stream: GET /v1/commands/{id}
// answers on every node of a cluster. (A hub alone recorded its own
// commands already; INSERT OR IGNORE keeps them.)
func (h *Hub) learnCommands() {
	name := "view"
	if n := h.node(); n != "" {
		name += "-" + n
	}
	for h.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		cons, err := h.js.CreateOrUpdateConsumer(ctx, CommandsStream, jetstream.ConsumerConfig{
			Durable: name, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			AckWait: 5 * time.Second,
		})
		cancel()
		if err != nil {
			if !h.sleep(time.Second) {
				return
			}
			continue
		}
		for h.ctx.Err() == nil {
			fctx, fcancel := context.WithTimeout(h.ctx, 2*time.Second)
			batch, err := cons.Fetch(256, jetstream.FetchContext(fctx))
			if err != nil {
				fcancel()
				break
			}
			for m := range batch.Messages() {
				var c Command
				if json.Unmarshal(m.Data(), &c) != nil || c.ID == "" {
					m.Ack() // not a command: nothing to learn
					continue
				}
				target := "all"
				if id, ok := strings.CutPrefix(m.Subject(), CommandSubject("")); ok {
					target = id
				}
				if _, err := h.DB.ExecContext(h.ctx, `INSERT OR IGNORE INTO commands (id, kind, target, body, actor, reason, created_at)
					VALUES (?, ?, ?, ?, ?, ?, ?)`, c.ID, c.Kind, target, string(m.Data()), c.Actor, c.Reason, c.IssuedAt); err != nil {
					h.log().Warn("hq: record a command from the stream", "err", err)
					m.Nak()
					continue
				}
				m.Ack()
			}
			fcancel()
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
				break
			}
		}
		if !h.sleep(200 * time.Millisecond) {
			return
		}
	}
}

// ErrUnknownStore is returned for a command to a store headquarters does
// not accept.
var ErrUnknownStore = errors.New("unknown store")

// ErrBadCommand wraps what is wrong with a command Send refused.
var ErrBadCommand = errors.New("bad command")

// Send checks, records and publishes a command for one store ("" = the
// whole chain), and returns its id. Headquarters fills in the id, the
// actor and the time.
func (h *Hub) Send(ctx context.Context, store string, c Command, actor string) (string, error) {
	c.ID, c.Actor, c.IssuedAt = uuid.NewString(), actor, migrations.FormatTime(time.Now())
	if err := c.Check(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	target, subject := "all", ChainSubject
	if store != "" {
		var n int
		if err := h.DB.QueryRowContext(ctx, `SELECT count(*) FROM stores WHERE store_id = ?`, store).Scan(&n); err != nil {
			return "", err
		}
		if n == 0 {
			return "", ErrUnknownStore
		}
		target, subject = store, CommandSubject(store)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	if _, err := h.DB.ExecContext(ctx, `INSERT INTO commands (id, kind, target, body, actor, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.Kind, target, string(b), actor, c.Reason, c.IssuedAt); err != nil {
		return "", fmt.Errorf("record command: %w", err)
	}
	m := nats.NewMsg(subject)
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, c.ID)
	if _, err := h.js.PublishMsg(ctx, m); err != nil {
		h.DB.ExecContext(context.WithoutCancel(ctx), `DELETE FROM commands WHERE id = ?`, c.ID)
		return "", fmt.Errorf("publish command: %w", err)
	}
	return c.ID, nil
}
