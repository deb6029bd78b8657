package identity

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5"

	"github.com/aerie-social/aerie/node/sqlite"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// DirectoryOptions tunes OpenDirectory. The zero value is valid.
type DirectoryOptions struct {
	// Synchronous is plc.sqlite's synchronous pragma (see sqlite.Options).
	Synchronous string
	// Now is the clock that stamps createdAt and judges the recovery window; nil means
	// time.Now. Tests move it.
	Now func() time.Time
}

// Directory is the embedded PLC directory: the DID histories in plc.sqlite, the chain
// rules of the PLC spec on every new operation, and the PLC HTTP API in Handler. One
// Directory can serve several nodes; it is safe for concurrent use (all writes go
// through the file's single writer, so two operations for one DID never race).
type Directory struct {
	db  *sqlite.DB
	now func() time.Time
	log *slog.Logger
}

// OpenDirectory opens (creating and migrating) the directory file at path. A nil log
// discards.
func OpenDirectory(ctx context.Context, path string, log *slog.Logger, opts DirectoryOptions) (*Directory, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("open PLC directory: %w", err)
	}
	db, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: opts.Synchronous, Migrations: migrations})
	if err != nil {
		return nil, fmt.Errorf("open PLC directory: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Directory{db: db, now: now, log: log.With("component", "plc")}, nil
}

// Close closes plc.sqlite.
func (d *Directory) Close() error { return d.db.Close() }

// Submit appends op to did's history after checking it: shape and limits
// (ErrInvalidOperation), for a new DID that op is a genesis hashing to did
// (ErrDIDMismatch), otherwise that prev is the latest operation and a rotation key of it
// signed op (ErrForkedChain, ErrInvalidSignature, ErrTombstoned), or that op is a
// recovery within the window (ErrLateRecovery), which nullifies what it displaces.
func (d *Directory) Submit(ctx context.Context, did syntax.DID, op *Operation) error {
	if did.Method() != "plc" {
		return fmt.Errorf("%w: %s is not a did:plc", ErrUnsupportedDID, did)
	}
	if err := op.Validate(); err != nil {
		return err
	}
	c, err := op.CID()
	if err != nil {
		return err
	}
	body, err := json.Marshal(op)
	if err != nil {
		return fmt.Errorf("encode PLC operation: %w", err)
	}
	now := d.now().UTC().Truncate(time.Millisecond)
	err = d.db.Write(ctx, func(tx *sql.Tx) error {
		entries, err := queryLog(ctx, tx, did, false)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			if err := checkGenesis(did, op); err != nil {
				return err
			}
		} else {
			active := make([]chainOp, len(entries))
			for i, e := range entries {
				at, err := time.Parse(time.RFC3339Nano, e.CreatedAt)
				if err != nil {
					return fmt.Errorf("stored createdAt of %s: %w", e.CID, err)
				}
				active[i] = chainOp{op: e.Operation, cid: e.CID, createdAt: at}
			}
			n, err := checkNext(active, op, now)
			if err != nil {
				return err
			}
			for _, gone := range active[len(active)-n:] {
				if _, err := tx.ExecContext(ctx, `UPDATE operations SET nullified = 1 WHERE did = ? AND cid = ?`, did.String(), gone.cid); err != nil {
					return fmt.Errorf("nullify %s: %w", gone.cid, err)
				}
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO operations (did, cid, operation, created_at) VALUES (?, ?, ?, ?)`,
			did.String(), c, string(body), now.Format(timeFormat))
		if errors.Is(sqlite.MapError(err), sqlite.ErrConflict) {
			return fmt.Errorf("%w: operation %s already accepted", ErrForkedChain, c)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("submit operation for %s: %w", did, err)
	}
	d.log.DebugContext(ctx, "PLC operation accepted", "did", did, "cid", c, "type", op.Type)
	return nil
}

// queryLog returns did's operations oldest first: all of them, or only those not
// nullified.
func queryLog(ctx context.Context, tx *sql.Tx, did syntax.DID, withNullified bool) ([]LogEntry, error) {
	q := `SELECT cid, operation, nullified, created_at FROM operations WHERE did = ? AND nullified = 0 ORDER BY seq`
	if withNullified {
		q = `SELECT cid, operation, nullified, created_at FROM operations WHERE did = ? ORDER BY seq`
	}
	rows, err := tx.QueryContext(ctx, q, did.String())
	if err != nil {
		return nil, fmt.Errorf("query log of %s: %w", did, err)
	}
	defer rows.Close()
	var out []LogEntry
	for rows.Next() {
		e := LogEntry{DID: did}
		var body string
		if err := rows.Scan(&e.CID, &body, &e.Nullified, &e.CreatedAt); err != nil {
			return nil, fmt.Errorf("scan log of %s: %w", did, err)
		}
		op, err := ParseOperation([]byte(body))
		if err != nil {
			return nil, fmt.Errorf("stored operation %s: %w", e.CID, err)
		}
		e.Operation = op
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read log of %s: %w", did, err)
	}
	return out, nil
}

func (d *Directory) readLog(ctx context.Context, did syntax.DID, withNullified bool) ([]LogEntry, error) {
	var entries []LogEntry
	err := d.db.Read(ctx, func(tx *sql.Tx) error {
		var err error
		entries, err = queryLog(ctx, tx, did, withNullified)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrDIDNotFound, did)
	}
	return entries, nil
}

// AuditLog returns every operation of did, nullified ones included, oldest first
// (ErrDIDNotFound if there are none).
func (d *Directory) AuditLog(ctx context.Context, did syntax.DID) ([]LogEntry, error) {
	return d.readLog(ctx, did, true)
}

// Log returns did's operations that are not nullified, oldest first (ErrDIDNotFound).
func (d *Directory) Log(ctx context.Context, did syntax.DID) ([]*Operation, error) {
	entries, err := d.readLog(ctx, did, false)
	if err != nil {
		return nil, err
	}
	ops := make([]*Operation, len(entries))
	for i, e := range entries {
		ops[i] = e.Operation
	}
	return ops, nil
}

// LastOp returns did's latest operation that is not nullified, which may be a tombstone
// (ErrDIDNotFound).
func (d *Directory) LastOp(ctx context.Context, did syntax.DID) (*Operation, error) {
	ops, err := d.Log(ctx, did)
	if err != nil {
		return nil, err
	}
	return ops[len(ops)-1], nil
}

// State returns did's current state (ErrDIDNotFound, ErrTombstoned).
func (d *Directory) State(ctx context.Context, did syntax.DID) (State, error) {
	last, err := d.LastOp(ctx, did)
	if err != nil {
		return State{}, err
	}
	st, ok := last.State(did)
	if !ok {
		return State{}, fmt.Errorf("%w: %s", ErrTombstoned, did)
	}
	return st, nil
}

// Handler returns the PLC HTTP API: GET and POST /<did>, GET /<did>/data, /<did>/log,
// /<did>/log/audit, /<did>/log/last, and /_health. Errors are JSON {"message": ...}
// as plc.directory sends them: 404 for an unknown DID, 410 for a tombstoned one on the
// document and data, 400 for a refused operation.
func (d *Directory) Handler() http.Handler {
	r := chi.NewRouter()
	r.Get("/_health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, "application/json", map[string]string{"version": "aerie"})
	})
	r.Get("/{did}", d.serve(func(ctx context.Context, did syntax.DID) (any, string, error) {
		st, err := d.State(ctx, did)
		return st.Document(), "application/did+ld+json", err
	}))
	r.Get("/{did}/data", d.serve(func(ctx context.Context, did syntax.DID) (any, string, error) {
		st, err := d.State(ctx, did)
		return st, "application/json", err
	}))
	r.Get("/{did}/log", d.serve(func(ctx context.Context, did syntax.DID) (any, string, error) {
		ops, err := d.Log(ctx, did)
		return ops, "application/json", err
	}))
	r.Get("/{did}/log/audit", d.serve(func(ctx context.Context, did syntax.DID) (any, string, error) {
		entries, err := d.AuditLog(ctx, did)
		return entries, "application/json", err
	}))
	r.Get("/{did}/log/last", d.serve(func(ctx context.Context, did syntax.DID) (any, string, error) {
		op, err := d.LastOp(ctx, did)
		return op, "application/json", err
	}))
	r.Post("/{did}", d.handleSubmit)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeMessage(w, http.StatusNotFound, "Not Found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeMessage(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	})
	return r
}

// serve adapts a read of one DID to an HTTP handler.
func (d *Directory) serve(read func(context.Context, syntax.DID) (any, string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		did, ok := pathDID(w, r)
		if !ok {
			return
		}
		v, contentType, err := read(r.Context(), did)
		if err != nil {
			d.writeError(w, r, did, err)
			return
		}
		writeJSON(w, http.StatusOK, contentType, v)
	}
}

func (d *Directory) handleSubmit(w http.ResponseWriter, r *http.Request) {
	did, ok := pathDID(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOperationJSON))
	if err != nil {
		writeMessage(w, http.StatusRequestEntityTooLarge, "operation too large")
		return
	}
	op, err := ParseOperation(body)
	if err == nil {
		err = d.Submit(r.Context(), did, op)
	}
	if err != nil {
		d.writeError(w, r, did, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// pathDID parses the {did} path segment; only did:plc lives here.
func pathDID(w http.ResponseWriter, r *http.Request) (syntax.DID, bool) {
	did, err := syntax.ParseDID(chi.URLParam(r, "did"))
	if err != nil || did.Method() != "plc" {
		writeMessage(w, http.StatusBadRequest, "invalid DID: expected did:plc")
		return "", false
	}
	return did, true
}

// writeError maps this package's sentinels to the PLC API's statuses; anything else is
// ours to log and a generic 500 to the client.
func (d *Directory) writeError(w http.ResponseWriter, r *http.Request, did syntax.DID, err error) {
	post := r.Method == http.MethodPost
	switch {
	case errors.Is(err, ErrDIDNotFound):
		writeMessage(w, http.StatusNotFound, "DID not registered: "+did.String())
	case errors.Is(err, ErrTombstoned) && !post:
		writeMessage(w, http.StatusGone, "DID not available: "+did.String())
	case errors.Is(err, ErrInvalidOperation), errors.Is(err, ErrInvalidSignature), errors.Is(err, ErrForkedChain),
		errors.Is(err, ErrLateRecovery), errors.Is(err, ErrTombstoned), errors.Is(err, ErrDIDMismatch):
		// Our messages name no secrets: the operation came from the client.
		writeMessage(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "submit operation for "+did.String()+": "))
	default:
		d.log.ErrorContext(r.Context(), "PLC request failed", "did", did, "err", err)
		writeMessage(w, http.StatusInternalServerError, "Internal Server Error")
	}
}

func writeMessage(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, "application/json", map[string]string{"message": msg})
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here; answer with a valid body, not half a document.
		status = http.StatusInternalServerError
		b = []byte(`{"message":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", contentType+"; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}
