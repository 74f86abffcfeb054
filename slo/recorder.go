package slo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"storepay/migrations"
)

// aliveEvery is how often a running storepay notes that it is alive: the
// resolution of a crash's measured downtime.
const aliveEvery = 5 * time.Second

// Recorder keeps availability events durably. Open records the start (and
// the crash before it, if the last run did not stop cleanly), Gateway
// queues a breaker change from the router's callback without blocking
// it, and Close records the clean stop.
type Recorder struct {
	DB  *migrations.DB
	Log *slog.Logger
	Now func() time.Time
	// AliveEvery overrides aliveEvery; negative switches the beat off.
	AliveEvery time.Duration

	mu      sync.Mutex
	pending []event
	kick    chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type event struct {
	at                  time.Time
	source, name, state string
	detail              string
}

func (r *Recorder) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Recorder) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}

// Open records the start and starts the writer and the alive beat.
func (r *Recorder) Open(ctx context.Context) error {
	now := r.now()
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		var last string
		err := tx.QueryRow(`SELECT state FROM availability_events WHERE source = 'storepay' ORDER BY seq DESC LIMIT 1`).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if last == "start" {
			// The last run never stopped cleanly: it crashed (or was
			// killed) some time after it was last seen alive.
			// Last seen alive: the later of the beat and the last
			// payment event (the beat is every few seconds; a payment
			// decided after it proves the process was still up).
			var alive string
			if err := tx.QueryRow(`SELECT max(coalesce((SELECT at FROM availability_alive WHERE id = 1), ''),
				coalesce((SELECT max(at) FROM payment_events), ''))`).Scan(&alive); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if alive == "" {
				alive = migrations.FormatTime(now)
			}
			if _, err := tx.Exec(`INSERT INTO availability_events (at, source, state, detail) VALUES (?, 'storepay', 'crash', 'did not stop cleanly; last seen alive then')`, alive); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(`INSERT INTO availability_events (at, source, state) VALUES (?, 'storepay', 'start')`, migrations.FormatTime(now)); err != nil {
			return err
		}
		return bumpAlive(tx, now)
	})
	if err != nil {
		return fmt.Errorf("slo: record start: %w", err)
	}
	r.kick = make(chan struct{}, 1)
	c, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.loop(c)
	}()
	return nil
}

func bumpAlive(tx *sql.Tx, at time.Time) error {
	_, err := tx.Exec(`INSERT INTO availability_alive (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at`, migrations.FormatTime(at))
	return err
}

// Gateway queues a bank's breaker change; the router calls it on its
// payment path, so it only appends and signals.
func (r *Recorder) Gateway(bank, from, to string) {
	r.mu.Lock()
	r.pending = append(r.pending, event{at: r.now(), source: "gateway", name: bank, state: to, detail: "from " + from})
	r.mu.Unlock()
	if r.kick != nil {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

func (r *Recorder) loop(ctx context.Context) {
	every := r.AliveEvery
	if every == 0 {
		every = aliveEvery
	}
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			r.flush(ctx, false)
		case <-tick:
			r.flush(ctx, true)
		}
	}
}

// flush writes the queued events (and the alive beat); a failed write
// keeps them queued for the next try.
func (r *Recorder) flush(ctx context.Context, alive bool) {
	r.mu.Lock()
	evs := r.pending
	r.pending = nil
	r.mu.Unlock()
	if len(evs) == 0 && !alive {
		return
	}
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		for _, e := range evs {
			if _, err := tx.Exec(`INSERT INTO availability_events (at, source, name, state, detail) VALUES (?,?,?,?,?)`,
				migrations.FormatTime(e.at), e.source, e.name, e.state, e.detail); err != nil {
				return err
			}
		}
		return bumpAlive(tx, r.now())
	})
	if err != nil {
		r.mu.Lock()
		r.pending = append(evs, r.pending...)
		r.mu.Unlock()
		if ctx.Err() == nil {
			r.log().Warn("slo: record availability events", "err", err, "queued", len(evs))
		}
	}
}

// Close writes what is queued and records the clean stop.
func (r *Recorder) Close(ctx context.Context) error {
	if r.cancel != nil {
		r.cancel()
		r.wg.Wait()
	}
	r.mu.Lock()
	evs := r.pending
	r.pending = nil
	r.mu.Unlock()
	now := r.now()
	evs = append(evs, event{at: now, source: "storepay", state: "stop"})
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		for _, e := range evs {
			if _, err := tx.Exec(`INSERT INTO availability_events (at, source, name, state, detail) VALUES (?,?,?,?,?)`,
				migrations.FormatTime(e.at), e.source, e.name, e.state, e.detail); err != nil {
				return err
			}
		}
		return bumpAlive(tx, now)
	})
	if err != nil {
		return fmt.Errorf("slo: record stop: %w", err)
	}
	return nil
}
