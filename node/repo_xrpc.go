package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/repo"
)

var (
	errRepoNotOwned     = &xrpc.Error{Status: http.StatusUnauthorized, Name: "AuthenticationRequired", Message: "the repo is not the authenticated account's"}
	errAccountInactive  = &xrpc.Error{Status: http.StatusUnauthorized, Name: "AccountDeactivated", Message: "Account is deactivated"}
	errRepoNotFoundHere = &xrpc.Error{Status: http.StatusBadRequest, Name: "RepoNotFound", Message: "Could not find repo"}
)

// writableRepo resolves the "repo" of a write (handle or DID) to the caller's own active
// account.
func (n *Node) writableRepo(ctx context.Context, repoParam string) (*account, error) {
	if repoParam == "" {
		return nil, xrpc.InvalidRequest("repo is required")
	}
	acct, err := n.accountBy(ctx, repoParam)
	if errors.Is(err, errAccountNotFound) {
		return nil, errRepoNotFoundHere
	}
	if err != nil {
		return nil, err
	}
	if acct.DID != authFrom(ctx).DID {
		return nil, errRepoNotOwned
	}
	if acct.TakedownRef != "" {
		return nil, errTakendown
	}
	if acct.DeactivatedAt != "" {
		return nil, errAccountInactive
	}
	return acct, nil
}

// validationMode maps the lexicon's optional "validate" flag.
func validationMode(v *bool) repo.ValidationMode {
	switch {
	case v == nil:
		return repo.ValidateKnown
	case *v:
		return repo.ValidateRequired
	}
	return repo.ValidateSkip
}

// parseRecordInput checks that a record's $type matches the collection, filling it in
// when absent as the reference PDS does, and encodes it.
func parseRecordInput(collection syntax.NSID, raw json.RawMessage) (*repo.Record, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, xrpc.InvalidRequest("record must be an object")
	}
	var head struct {
		Type *string `json:"$type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, xrpc.InvalidRequest("record: %s", jsonErrorText(err))
	}
	switch {
	case head.Type == nil:
		typ, _ := json.Marshal(collection.String())
		rest := bytes.TrimSpace(raw[1:])
		sep := []byte(",")
		if len(rest) > 0 && rest[0] == '}' {
			sep = nil
		}
		raw = bytes.Join([][]byte{[]byte(`{"$type":`), typ, sep, rest}, nil)
	case *head.Type != collection.String():
		return nil, xrpc.InvalidRequest("Invalid $type: expected %s, got %s", collection, *head.Type)
	}
	rec, err := repo.RecordFromJSON(raw)
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func parseOptionalCID(field, s string) (*cid.Cid, error) {
	if s == "" {
		return nil, nil
	}
	c, err := xrpc.DecodeCID(s)
	if err != nil {
		return nil, xrpc.InvalidRequest("%s is not a valid CID", field)
	}
	return &c, nil
}

type commitMeta struct {
	CID string `json:"cid"`
	Rev string `json:"rev"`
}

func commitOf(ev *repo.CommitEvent) *commitMeta {
	if ev.NoChange {
		return nil
	}
	return &commitMeta{CID: ev.Commit.String(), Rev: ev.Rev.String()}
}

// applyWrites runs writes for acct and hands the commit to the relay before the repo lock
// is released, so events reach the log in rev order.
func (n *Node) applyWrites(ctx context.Context, acct *account, writes []repo.Write, swapCommit *cid.Cid, mode repo.ValidationMode) (*repo.CommitEvent, error) {
	did, err := syntax.ParseDID(acct.DID)
	if err != nil {
		return nil, fmt.Errorf("stored account DID %q: %w", acct.DID, err)
	}
	if err := n.checkRecordBlobs(ctx, did, writes); err != nil {
		return nil, err
	}
	var queued *queuedCommit
	ev, err := n.repos.ApplyWrites(ctx, did, writes, repo.WriteOpts{
		SwapCommit: swapCommit,
		Validate:   mode,
		OnCommit: func(ev *repo.CommitEvent) error {
			q, err := ev.Forwarding.Do(func() (any, error) {
				n.afterCommitBlobs(context.WithoutCancel(ctx), ev)
				return n.enqueueCommit(ctx, ev)
			})
			queued, _ = q.(*queuedCommit)
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	var seq int64
	if queued != nil { // nil when the writes changed nothing
		if seq, err = n.awaitCommit(ctx, queued); err != nil {
			return nil, fmt.Errorf("commit %s is durable, forwarding it failed: %w", ev.Rev, err)
		}
	}
	// Read-after-write: every AppView read from now on shows this.
	n.appview.NoteLocalWrite(seq)
	n.noteInterest(ctx, writes)
	return ev, nil
}

func (n *Node) handleComAtprotoRepoCreateRecord(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Repo       string          `json:"repo"`
		Collection string          `json:"collection"`
		RKey       string          `json:"rkey"`
		Validate   *bool           `json:"validate"`
		Record     json.RawMessage `json:"record"`
		SwapCommit string          `json:"swapCommit"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	acct, err := n.writableRepo(ctx, in.Repo)
	if err != nil {
		return err
	}
	write, err := parseWrite(repo.ActionCreate, in.Collection, in.RKey, in.Record)
	if err != nil {
		return err
	}
	swapCommit, err := parseOptionalCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	ev, err := n.applyWrites(ctx, acct, []repo.Write{write}, swapCommit, validationMode(in.Validate))
	if err != nil {
		return err
	}
	res := ev.Results[0]
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{
		"uri": res.URI.String(), "cid": res.CID.String(), "commit": commitOf(ev), "validationStatus": res.ValidationStatus,
	})
	return nil
}

// parseWrite checks one write's collection, rkey and record at the edge.
func parseWrite(action repo.Action, collection, rkey string, record json.RawMessage) (repo.Write, error) {
	coll, err := xrpc.ParseNSID(collection)
	if err != nil {
		return repo.Write{}, xrpc.InvalidRequest("invalid collection %q", collection)
	}
	wr := repo.Write{Action: action, Collection: coll}
	if rkey != "" {
		if wr.RKey, err = xrpc.ParseRecordKey(rkey); err != nil {
			return repo.Write{}, xrpc.InvalidRequest("invalid rkey %q", rkey)
		}
	} else if action != repo.ActionCreate {
		return repo.Write{}, xrpc.InvalidRequest("rkey is required for %s", action)
	}
	if action != repo.ActionDelete {
		if wr.Record, err = parseRecordInput(coll, record); err != nil {
			return repo.Write{}, err
		}
	}
	return wr, nil
}

func (n *Node) handleComAtprotoRepoPutRecord(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Repo       string          `json:"repo"`
		Collection string          `json:"collection"`
		RKey       string          `json:"rkey"`
		Validate   *bool           `json:"validate"`
		Record     json.RawMessage `json:"record"`
		// SwapRecord stays raw to tell absent (no check) from null (must not exist).
		SwapRecord json.RawMessage `json:"swapRecord"`
		SwapCommit string          `json:"swapCommit"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	acct, err := n.writableRepo(ctx, in.Repo)
	if err != nil {
		return err
	}
	if in.RKey == "" {
		return xrpc.InvalidRequest("rkey is required")
	}
	write, err := parseWrite(repo.ActionUpdate, in.Collection, in.RKey, in.Record)
	if err != nil {
		return err
	}
	switch sr := string(bytes.TrimSpace(in.SwapRecord)); {
	case sr == "":
	case sr == "null":
		undef := cid.Undef
		write.SwapRecord = &undef
	default:
		var s string
		if err := json.Unmarshal(in.SwapRecord, &s); err != nil {
			return xrpc.InvalidRequest("swapRecord must be a CID string or null")
		}
		if write.SwapRecord, err = parseOptionalCID("swapRecord", s); err != nil {
			return err
		}
	}
	swapCommit, err := parseOptionalCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	// putRecord creates or updates: try as an update, and create when the record is absent.
	ev, err := n.applyWrites(ctx, acct, []repo.Write{write}, swapCommit, validationMode(in.Validate))
	if errors.Is(err, repo.ErrRecordNotFound) && (write.SwapRecord == nil || !write.SwapRecord.Defined()) {
		write.Action = repo.ActionCreate
		ev, err = n.applyWrites(ctx, acct, []repo.Write{write}, swapCommit, validationMode(in.Validate))
	}
	if err != nil {
		return err
	}
	res := ev.Results[0]
	out := map[string]any{"uri": res.URI.String(), "cid": res.CID.String(), "validationStatus": res.ValidationStatus}
	if c := commitOf(ev); c != nil {
		out["commit"] = c
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (n *Node) handleComAtprotoRepoDeleteRecord(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Repo       string `json:"repo"`
		Collection string `json:"collection"`
		RKey       string `json:"rkey"`
		SwapRecord string `json:"swapRecord"`
		SwapCommit string `json:"swapCommit"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	acct, err := n.writableRepo(ctx, in.Repo)
	if err != nil {
		return err
	}
	write, err := parseWrite(repo.ActionDelete, in.Collection, in.RKey, nil)
	if err != nil {
		return err
	}
	if write.SwapRecord, err = parseOptionalCID("swapRecord", in.SwapRecord); err != nil {
		return err
	}
	swapCommit, err := parseOptionalCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	ev, err := n.applyWrites(ctx, acct, []repo.Write{write}, swapCommit, repo.ValidateSkip)
	if errors.Is(err, repo.ErrRecordNotFound) && write.SwapRecord == nil {
		// Deleting what is not there is a no-op, as in the reference PDS.
		xrpc.WriteJSON(w, http.StatusOK, map[string]any{})
		return nil
	}
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"commit": commitOf(ev)})
	return nil
}

func (n *Node) handleComAtprotoRepoApplyWrites(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Repo     string `json:"repo"`
		Validate *bool  `json:"validate"`
		Writes   []struct {
			Type       string          `json:"$type"`
			Collection string          `json:"collection"`
			RKey       string          `json:"rkey"`
			Value      json.RawMessage `json:"value"`
		} `json:"writes"`
		SwapCommit string `json:"swapCommit"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	acct, err := n.writableRepo(ctx, in.Repo)
	if err != nil {
		return err
	}
	if len(in.Writes) > repo.MaxWrites {
		return xrpc.InvalidRequest("Too many writes. Max: %d", repo.MaxWrites)
	}
	writes := make([]repo.Write, len(in.Writes))
	kinds := make([]string, len(in.Writes))
	for i, wr := range in.Writes {
		var action repo.Action
		switch wr.Type {
		case "com.atproto.repo.applyWrites#create":
			action, kinds[i] = repo.ActionCreate, "com.atproto.repo.applyWrites#createResult"
		case "com.atproto.repo.applyWrites#update":
			action, kinds[i] = repo.ActionUpdate, "com.atproto.repo.applyWrites#updateResult"
		case "com.atproto.repo.applyWrites#delete":
			action, kinds[i] = repo.ActionDelete, "com.atproto.repo.applyWrites#deleteResult"
		default:
			return xrpc.InvalidRequest("writes[%d]: unknown $type %q", i, wr.Type)
		}
		if writes[i], err = parseWrite(action, wr.Collection, wr.RKey, wr.Value); err != nil {
			var xe *xrpc.Error
			if errors.As(err, &xe) {
				xe.Message = "writes[" + strconv.Itoa(i) + "]: " + xe.Message
			}
			return err
		}
	}
	swapCommit, err := parseOptionalCID("swapCommit", in.SwapCommit)
	if err != nil {
		return err
	}
	ev, err := n.applyWrites(ctx, acct, writes, swapCommit, validationMode(in.Validate))
	if err != nil {
		return err
	}
	results := make([]map[string]any, len(ev.Results))
	for i, res := range ev.Results {
		results[i] = map[string]any{"$type": kinds[i]}
		if writes[i].Action != repo.ActionDelete {
			results[i]["uri"] = res.URI.String()
			results[i]["cid"] = res.CID.String()
			results[i]["validationStatus"] = res.ValidationStatus
		}
	}
	out := map[string]any{"results": results}
	if c := commitOf(ev); c != nil {
		out["commit"] = c
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}
