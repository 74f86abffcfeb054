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
package migrations
