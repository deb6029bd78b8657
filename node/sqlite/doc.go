// Package sqlite opens SQLite files the way every Aerie database wants them: our pragmas on
// every pooled connection, one writer connection plus a small reader pool, embedded
// forward-only migrations tracked by PRAGMA user_version, and driver errors translated once
// into this package's sentinels.
//
// It is the only package that imports the driver (pure-Go modernc.org/sqlite). A *DB is safe
// for concurrent use: writes are serialized on the single writer connection, so our own
// writers never contend for the file lock, and reads run in parallel on the reader pool
// (or, with SharedReader, on the writer connection). Stmt keeps the writer's hot
// statements prepared across transactions.
package sqlite
