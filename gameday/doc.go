// Package gameday rehearses a store's day against the real processes: two
// banksim processes and a storepay serve process on loopback, a workload
// shaped like a day (morning rush, lunch spike, quiet hours) at
// accelerated time, and a plan of incidents fired at set times through
// banksim's admin API and process control (SIGKILL and restart). Then it
// reports the SLO figures (package slo, read from the run's database), the
// payments by outcome, the time to fail over and back, the queue's peak
// and time to drain, and the ledger check against the banks: no double
// charge, nothing lost.
//
// Time is accelerated for the workload and the plan (Plan.Speed plan
// seconds per real second); storepay and the banks run on the wall clock,
// so the figures measured on them (failover, drain) are real seconds.
// Everything it starts listens on 127.0.0.1 and is bounded in count
// (Plan.MaxPayments) and time (the plan's day at its speed, plus a drain
// bound).
package gameday
