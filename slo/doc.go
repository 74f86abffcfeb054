// Package slo turns what storepay records into the service level a chain
// can sign up to: store availability (a store is up when it can take,
// make and deliver an order, connected or not, and no payment keeps a
// customer waiting more than a minute), payment availability against the
// 99.999% objective, the online and offline shares, the error budget and
// its burn rate, and the incidents (bank outages, all banks out,
// emergency stops, crashes) with their start, end and effect.
//
// Compute reads a database and never writes to it, so that the report
// runs beside a serving store. Recorder writes the two things storepay
// would otherwise forget: circuit-breaker changes and its own starts,
// stops and crashes (migration 0032). docs/slo.md defines every figure.
package slo
