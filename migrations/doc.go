// Package migrations owns storepay's SQLite database: the schema as
// numbered SQL files embedded in the binary, and the one way to open the
// database.
//
// Every durable write in storepay goes through [DB.Update], which hands the
// write to a single writer goroutine. The writer runs every write that is
// waiting into one transaction (each in its own savepoint, so one failure
// rolls back only itself) and commits them together: many terminals share
// one fsync (group commit). With WAL and synchronous=FULL a commit is on
// disk before Update returns, so a caller may acknowledge what it wrote.
//
// Reads go to a separate read-only pool ([DB.Read]) and never wait for the
// writer.
//
// One storepay process at a time may use a database: the commands that
// serve or write it take [Lock] first, an flock on <database>.lock that
// names its holder's pid and that the kernel drops when the holder dies.
// Open itself does not lock, so that one process may open a database
// again (tests, a simulator reopening it after a simulated crash).
package migrations
