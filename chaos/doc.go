// Package chaos reproduces, as tests, the failures real stores see: a
// bank down for minutes, a slow bank, lost responses, a crash in the
// middle of a payment, a full disk, duplicate storms, bad input.
//
// Every scenario runs storepay and banksim as real child processes on
// loopback (the binaries are built once per test run), drives storepay
// only through its contract (CLI, config file, HTTP API), and checks what
// the banks really did through banksim's ledger as well as storepay's own
// state. Scenarios are bounded in count and time and stop by themselves.
package chaos
