package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"modernc.org/sqlite"
)

// driverName is modernc.org/sqlite behind a cache of prepared statements.
//
// database/sql hands a query with arguments straight to the driver, which
// parses it anew every time; on storepay's hot path (a handful of
// statements per payment, all on the one writer connection) parsing was a
// third of the writer's time. The cache keeps each connection's prepared
// statements by query text. A statement already busy (its rows still
// open) is prepared afresh rather than shared.
const driverName = "storepay-sqlite"

func init() {
	sql.Register(driverName, cachingDriver{base: &sqlite.Driver{}})
}

// maxCachedStmts bounds each connection's cache; storepay's queries are a
// fixed set far below it.
const maxCachedStmts = 512

type cachingDriver struct{ base driver.Driver }

func (d cachingDriver) Open(name string) (driver.Conn, error) {
	c, err := d.base.Open(name)
	if err != nil {
		return nil, err
	}
	return &cachingConn{base: c, stmts: map[string]*cachedStmt{}}, nil
}

type cachedStmt struct {
	st   driver.Stmt
	busy bool
}

// cachingConn is used by one goroutine at a time (database/sql's
// guarantee for a driver.Conn), so its map needs no lock.
type cachingConn struct {
	base  driver.Conn
	stmts map[string]*cachedStmt
}

var (
	_ driver.ExecerContext      = (*cachingConn)(nil)
	_ driver.QueryerContext     = (*cachingConn)(nil)
	_ driver.ConnBeginTx        = (*cachingConn)(nil)
	_ driver.ConnPrepareContext = (*cachingConn)(nil)
	_ driver.SessionResetter    = (*cachingConn)(nil)
	_ driver.Validator          = (*cachingConn)(nil)
	_ driver.Pinger             = (*cachingConn)(nil)
)

func (c *cachingConn) stmt(ctx context.Context, query string) (driver.Stmt, func(), error) {
	if cs := c.stmts[query]; cs != nil && !cs.busy {
		cs.busy = true
		return cs.st, func() { cs.busy = false }, nil
	}
	st, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	if c.stmts[query] == nil && len(c.stmts) < maxCachedStmts {
		cs := &cachedStmt{st: st, busy: true}
		c.stmts[query] = cs
		return st, func() { cs.busy = false }, nil
	}
	return st, func() { st.Close() }, nil
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	st, release, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	defer release()
	ex, ok := st.(driver.StmtExecContext)
	if !ok {
		return nil, errors.New("sqlite statement lacks ExecContext")
	}
	return ex.ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	st, release, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	q, ok := st.(driver.StmtQueryContext)
	if !ok {
		release()
		return nil, errors.New("sqlite statement lacks QueryContext")
	}
	rows, err := q.QueryContext(ctx, args)
	if err != nil {
		release()
		return nil, err
	}
	return &releasingRows{Rows: rows, release: release}, nil
}

// releasingRows gives its statement back to the cache when closed.
type releasingRows struct {
	driver.Rows
	release func()
}

func (r *releasingRows) Close() error {
	err := r.Rows.Close()
	if r.release != nil {
		r.release()
		r.release = nil
	}
	return err
}

func (c *cachingConn) Prepare(query string) (driver.Stmt, error) { return c.base.Prepare(query) }

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := c.base.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.base.Prepare(query)
}

func (c *cachingConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.base.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *cachingConn) Close() error {
	for q, cs := range c.stmts {
		cs.st.Close()
		delete(c.stmts, q)
	}
	return c.base.Close()
}

func (c *cachingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.base.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *cachingConn) IsValid() bool {
	if v, ok := c.base.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *cachingConn) Ping(ctx context.Context) error {
	if p, ok := c.base.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}
