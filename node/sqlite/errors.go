package sqlite

import (
	"errors"
	"fmt"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrConflict is returned when a write violates a UNIQUE or PRIMARY KEY constraint.
	ErrConflict = errors.New("sqlite: constraint conflict")
	// ErrBusy is returned when the file stayed locked past busy_timeout.
	ErrBusy = errors.New("sqlite: database busy")
	// ErrCorrupt is returned when SQLite reports a damaged or non-database file.
	ErrCorrupt = errors.New("sqlite: database corrupt")
	// ErrTooNew is returned by Open when the file was migrated by a newer Aerie than this one.
	ErrTooNew = errors.New("sqlite: database schema is newer than this binary")
)

// MapError translates a driver error into this package's sentinels, keeping the driver's
// error in the chain for the log; errors it does not recognise pass through unchanged.
// Write and Read apply it to what they return; code inside a Write function calls it to
// react to a conflict before the transaction ends.
func MapError(err error) error {
	var se *sqlite.Error
	if err == nil || !errors.As(err, &se) {
		return err
	}
	switch code := se.Code(); {
	case code == sqlite3.SQLITE_CONSTRAINT_UNIQUE, code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case code&0xff == sqlite3.SQLITE_BUSY, code&0xff == sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w: %w", ErrBusy, err)
	case code&0xff == sqlite3.SQLITE_CORRUPT, code&0xff == sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}
