// Package hq links a chain's stores to headquarters over NATS JetStream.
//
// Store side ([Link]): triggers (migrations 0033, 0034) write every change
// headquarters should know into the hq_outbox table, in the transaction
// of the change. The link runs a NATS server inside storepay with
// JetStream (domain = store id) as a leaf node of headquarters; its relay
// copies the outbox into the local stream STOREPAY_EVENTS (Nats-Msg-Id =
// event id) and deletes what the stream acknowledged. Selling never waits
// for any of it: the local stream is on the same machine, and the leaf
// link to headquarters is needed only for headquarters to read it.
//
// Headquarters ([Hub]): a NATS server with JetStream (domain hq) that
// accepts the stores' leaf connections; one durable consumer per store,
// on the store's own stream across the leaf link, feeds a chain view in
// SQLite; commands go down on the stream STOREPAY_COMMANDS, which every
// store reads with its own durable consumer on the hub.
//
// Why durable consumers and not stream sourcing: a sourced stream at the
// hub would also do, but in a first trial it resumed tens of seconds
// after a link came back, and a consumer lets headquarters commit a batch
// to its view before acknowledging it. Either way JetStream does the
// replication; this package only reads and writes its streams.
package hq
