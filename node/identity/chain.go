package identity

import (
	"errors"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// RecoveryWindow is how long after an operation a higher-priority rotation key may still
// nullify it (PLC spec, "Account Recovery"). An operation exactly this old can still be
// nullified; one a moment older cannot.
const RecoveryWindow = 72 * time.Hour

// timeFormat is how the PLC directory writes createdAt: UTC, milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z"

// LogEntry is one operation in a DID's history, as /<did>/log/audit serves it.
type LogEntry struct {
	DID       syntax.DID `json:"did"`
	Operation *Operation `json:"operation"`
	CID       string     `json:"cid"`
	Nullified bool       `json:"nullified"`
	CreatedAt string     `json:"createdAt"`
}

// chainOp is an accepted, not nullified operation in a DID's history.
type chainOp struct {
	op        *Operation
	cid       string
	createdAt time.Time
}

// checkGenesis checks a DID's first operation: not a tombstone, no prev, signed by one
// of its own rotation keys, hashing to did.
func checkGenesis(did syntax.DID, op *Operation) error {
	if op.Type == TypeTombstone || op.Prev != "" {
		return fmt.Errorf("%w: first operation of %s must be a genesis operation", ErrForkedChain, did)
	}
	if _, err := op.VerifySignature(op.NextRotationKeys()); err != nil {
		return fmt.Errorf("genesis of %s: %w", did, err)
	}
	got, err := op.GenesisDID()
	if err != nil {
		return err
	}
	if got != did {
		return fmt.Errorf("%w: genesis hashes to %s, not %s", ErrDIDMismatch, got, did)
	}
	return nil
}

// checkNext decides whether op may follow the active (not nullified) history at time
// now, and returns how many operations at the end of active it nullifies (0 for a plain
// update). The rules are those of the PLC directory:
//
//   - prev must name an active operation that is not a tombstone, and op cannot be a
//     second genesis or a legacy create;
//   - if prev is the latest operation, one of prev's rotation keys must have signed op;
//   - otherwise op is a recovery: it must be signed by a key that comes strictly before,
//     in prev's rotation keys, the key that signed the first operation it displaces, and
//     that operation must be at most RecoveryWindow old.
func checkNext(active []chainOp, op *Operation, now time.Time) (int, error) {
	if op.Prev == "" || op.Type == TypeCreate {
		return 0, fmt.Errorf("%w: genesis operation for an existing DID", ErrForkedChain)
	}
	idx := -1
	for i, c := range active {
		if c.cid == op.Prev {
			idx = i
			break
		}
	}
	if idx < 0 {
		return 0, fmt.Errorf("%w: prev %s is not an active operation", ErrForkedChain, op.Prev)
	}
	prev := active[idx]
	if prev.op.Type == TypeTombstone {
		return 0, fmt.Errorf("%w: prev is a tombstone", ErrTombstoned)
	}
	keys := prev.op.NextRotationKeys()
	if idx == len(active)-1 {
		if _, err := op.VerifySignature(keys); err != nil {
			return 0, err
		}
		return 0, nil
	}

	disputed := active[idx+1]
	signer, err := disputed.op.VerifySignature(keys)
	if err != nil {
		// Accepted operations verified when they were appended; this one no longer
		// does, so the history itself is corrupt.
		return 0, fmt.Errorf("re-verify %s: %w", disputed.cid, err)
	}
	if _, err := op.VerifySignature(keys[:signer]); err != nil {
		if errors.Is(err, ErrInvalidSignature) {
			// Either a fork or a lower-priority key trying to recover: both are forks.
			return 0, fmt.Errorf("%w: prev is not the latest operation and no higher-priority rotation key signed it", ErrForkedChain)
		}
		return 0, err
	}
	if now.Sub(disputed.createdAt) > RecoveryWindow {
		return 0, fmt.Errorf("%w: %s was accepted at %s", ErrLateRecovery, disputed.cid, disputed.createdAt.Format(timeFormat))
	}
	return len(active) - idx - 1, nil
}

// VerifyAuditLog replays a DID's audit log (oldest first, as /<did>/log/audit serves it)
// and checks every operation: CIDs, the genesis hash, signatures, chain continuity, and
// that the nullified flags are exactly those the recovery rules produce. It returns the
// first problem found, wrapping this package's sentinels.
func VerifyAuditLog(did syntax.DID, entries []LogEntry) error {
	if len(entries) == 0 {
		return fmt.Errorf("%w: empty audit log for %s", ErrDIDNotFound, did)
	}
	var active []chainOp
	nullified := map[string]bool{}
	for i, e := range entries {
		if e.DID != did {
			return fmt.Errorf("%w: entry %d is for %s", ErrDIDMismatch, i, e.DID)
		}
		if e.Operation == nil {
			return fmt.Errorf("%w: entry %d has no operation", ErrInvalidOperation, i)
		}
		c, err := e.Operation.CID()
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if c != e.CID {
			return fmt.Errorf("%w: entry %d has CID %s, computed %s", ErrInvalidOperation, i, e.CID, c)
		}
		at, err := time.Parse(time.RFC3339Nano, e.CreatedAt)
		if err != nil {
			return fmt.Errorf("%w: entry %d createdAt: %w", ErrInvalidOperation, i, err)
		}
		if i == 0 {
			if err := checkGenesis(did, e.Operation); err != nil {
				return err
			}
		} else {
			if _, err := e.Operation.decodeSig(); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			n, err := checkNext(active, e.Operation, at)
			if err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			for _, gone := range active[len(active)-n:] {
				nullified[gone.cid] = true
			}
			active = active[:len(active)-n]
		}
		active = append(active, chainOp{op: e.Operation, cid: c, createdAt: at})
	}
	for i, e := range entries {
		if e.Nullified != nullified[e.CID] {
			return fmt.Errorf("%w: entry %d nullified = %t, replay says %t", ErrForkedChain, i, e.Nullified, nullified[e.CID])
		}
	}
	return nil
}
