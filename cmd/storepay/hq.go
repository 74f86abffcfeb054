package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"storepay/hq"
	"storepay/web"
)

// HQFileConfig is headquarters' config file (contract hq.md).
type HQFileConfig struct {
	Listen          string          `json:"listen"`
	Database        string          `json:"database"`
	LeafnodesListen string          `json:"leafnodes_listen"`
	DataDir         string          `json:"data_dir"`
	Stores          []HQStoreConfig `json:"stores"`
	LogLevel        string          `json:"log_level,omitzero"`
	// Cluster makes this headquarters one node of a cluster (three in
	// production, docs/hq.md); without it headquarters runs alone.
	Cluster *HQClusterConfig `json:"cluster,omitempty"`
}

// HQClusterConfig is one node of headquarters' cluster.
type HQClusterConfig struct {
	Name   string   `json:"name"`
	Node   string   `json:"node"`
	Listen string   `json:"listen"`
	Routes []string `json:"routes"`
	Nodes  []string `json:"nodes"`
}

func (c *HQClusterConfig) validate() error {
	if !hq.ValidNode(c.Name) {
		return fmt.Errorf("config: cluster.name: %q must be 1-32 letters or digits", c.Name)
	}
	if !hq.ValidNode(c.Node) {
		return fmt.Errorf("config: cluster.node: %q must be 1-32 letters or digits", c.Node)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("config: cluster.listen: %q must be host:port", c.Listen)
	}
	seen := map[string]bool{}
	for i, n := range c.Nodes {
		if !hq.ValidNode(n) || seen[n] {
			return fmt.Errorf("config: cluster.nodes[%d]: %q must be a distinct name of 1-32 letters or digits", i, n)
		}
		seen[n] = true
	}
	if len(c.Nodes) < 3 || !seen[c.Node] {
		return errors.New("config: cluster.nodes: must name every node, this one (cluster.node) included, at least three")
	}
	if len(c.Routes) != len(c.Nodes)-1 {
		return fmt.Errorf("config: cluster.routes: must list the other %d nodes' routes", len(c.Nodes)-1)
	}
	for i, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-route" || u.Port() == "" {
			return fmt.Errorf("config: cluster.routes[%d]: %q must be nats-route://host:port", i, r)
		}
	}
	return nil
}

// HQStoreConfig is a store headquarters accepts: its id (the store's
// store_id) and the variable holding its leaf password. The store's own
// credentials_env holds "store_id:password".
type HQStoreConfig struct {
	ID          string `json:"id"`
	PasswordEnv string `json:"password_env"`
}

// ParseHQConfig parses and validates headquarters' config; errors name the key.
func ParseHQConfig(b []byte) (HQFileConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return HQFileConfig{}, fmt.Errorf("config: not a JSON object: %w", err)
	}
	for _, key := range []string{"listen", "database", "leafnodes_listen", "data_dir", "stores"} {
		if _, ok := raw[key]; !ok {
			return HQFileConfig{}, fmt.Errorf("config: %s: required key is missing", key)
		}
	}
	var c HQFileConfig
	var uk *web.UnknownKeyError
	if err := web.ExactKeys(b, &c); errors.As(err, &uk) {
		return HQFileConfig{}, fmt.Errorf("config: %s: unknown key (keys are case-sensitive)", uk.Path)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return HQFileConfig{}, configDecodeError(err)
	}
	if err := validListen(c.Listen); err != nil {
		return HQFileConfig{}, fmt.Errorf("config: listen: %q %w", c.Listen, err)
	}
	if strings.TrimSpace(c.Database) == "" {
		return HQFileConfig{}, errors.New("config: database: must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.LeafnodesListen); err != nil {
		return HQFileConfig{}, fmt.Errorf("config: leafnodes_listen: %q must be host:port", c.LeafnodesListen)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return HQFileConfig{}, errors.New("config: data_dir: must not be empty")
	}
	seen := map[string]bool{}
	for i, s := range c.Stores {
		if !hq.ValidStoreID(s.ID) {
			return HQFileConfig{}, fmt.Errorf("config: stores[%d].id: %q must be 1-64 letters, digits, - or _ (and not %q)", i, s.ID, hq.HubDomain)
		}
		if seen[s.ID] {
			return HQFileConfig{}, fmt.Errorf("config: stores[%d].id: %q appears twice", i, s.ID)
		}
		seen[s.ID] = true
		if strings.TrimSpace(s.PasswordEnv) == "" {
			return HQFileConfig{}, fmt.Errorf("config: stores[%d].password_env: must name an environment variable", i)
		}
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return HQFileConfig{}, fmt.Errorf("config: log_level: %q must be debug, info, warn or error", c.LogLevel)
	}
	if c.Cluster != nil {
		if err := c.Cluster.validate(); err != nil {
			return HQFileConfig{}, err
		}
	}
	return c, nil
}

func loadHQConfig(path string) (HQFileConfig, error) {
	if path == "" {
		return HQFileConfig{}, &exitError{code: 2, err: errors.New("--config is required")}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return HQFileConfig{}, fmt.Errorf("config: %w", err)
	}
	return ParseHQConfig(b)
}

// runHQ is `storepay hq --config F` and `storepay hq enroll ...`.
func runHQ(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "enroll" {
		return exitOne(runHQEnroll(ctx, args[1:], stdout, stderr))
	}
	fs := flag.NewFlagSet("hq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "headquarters config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadHQConfig(*path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	hub, err := openHub(ctx, cfg, getenv)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		hub.Close()
		hub.DB.Close()
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	hub.Log = log
	srv := &http.Server{Handler: hub.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("storepay headquarters serving", "addr", ln.Addr().String(), "leafnodes", hub.LeafAddr(), "stores", len(cfg.Stores))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	hub.Close()
	return errors.Join(err, hub.DB.Close())
}

// openHub opens headquarters' database and starts its NATS server.
func openHub(ctx context.Context, cfg HQFileConfig, getenv func(string) string) (*hq.Hub, error) {
	hc := hq.HubConfig{LeafListen: cfg.LeafnodesListen, DataDir: cfg.DataDir}
	if c := cfg.Cluster; c != nil {
		hc.Cluster = &hq.HubCluster{Name: c.Name, Node: c.Node, Listen: c.Listen, Routes: c.Routes, Nodes: c.Nodes}
	}
	for i, s := range cfg.Stores {
		pw := getenv(s.PasswordEnv)
		if pw == "" {
			return nil, fmt.Errorf("config: stores[%d].password_env: environment variable %s is not set", i, s.PasswordEnv)
		}
		hc.Stores = append(hc.Stores, hq.HubStore{ID: s.ID, Password: pw})
	}
	db, err := hq.OpenHubDB(ctx, cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	hub := &hq.Hub{Config: hc, DB: db}
	if err := hub.Open(); err != nil {
		db.Close()
		return nil, err
	}
	return hub, nil
}

func runHQEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hq enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "headquarters config file")
	name := fs.String("name", "", "who the token is for")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadHQConfig(*path)
	if err != nil {
		return err
	}
	db, err := hq.OpenHubDB(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer func(db *sql.DB) { db.Close() }(db)
	tok, err := hq.Enroll(ctx, db, *name)
	if err != nil {
		return fmt.Errorf("hq enroll: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
