package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/repo"
)

const (
	// revClockSkew is how far in the future a remote rev may be: a rev is a timestamp, and
	// one far ahead would block every real commit after it.
	revClockSkew = 5 * time.Minute
	// resyncTimeout bounds one getRepo download and its verification.
	resyncTimeout = 5 * time.Minute
	// resyncRetry is how long a repo whose resync failed waits before the next try; its
	// events are dropped meanwhile (they could not be chained anyway).
	resyncRetry = time.Minute
)

// handleFrame processes one frame from h. Only a failure of the stream itself is returned
// (it makes runHost redial); a bad event is logged and skipped.
func (c *Crawler) handleFrame(ctx context.Context, h *host, b []byte, log *slog.Logger) error {
	ev, err := decodeCrawledFrame(b)
	if ev != nil {
		ev.frame = nil // b is the connection's read buffer, reused for the next frame
	}
	var fe *FrameError
	switch {
	case errors.As(err, &fe):
		if fe.Name == "FutureCursor" || fe.Name == "OutdatedCursor" {
			// The host's log is not the one our cursor came from: start again live.
			h.mu.Lock()
			h.cursor = 0
			h.mu.Unlock()
		}
		return fmt.Errorf("host sent error %s: %s", fe.Name, fe.Message)
	case errors.Is(err, ErrUnknownType):
		log.Debug("skipping an unknown message type", "err", err)
		return nil
	case err != nil:
		log.Warn("skipping a malformed frame", "err", err, "bytes", len(b))
		return nil
	case ev.Info != nil:
		log.Info("host sent #info", "name", ev.Info.Name, "message", ev.Info.Message)
		return nil
	}
	if cursor, _, _, _ := h.snapshot(); cursor > 0 && ev.Seq <= cursor {
		return nil // a replayed or out-of-order seq: already processed
	}
	if h.limiter != nil {
		if err := h.limiter.Wait(ctx); err != nil {
			return nil // ctx ended
		}
	}
	var done <-chan error
	switch {
	case ev.Commit != nil:
		done = c.handleCommit(ctx, h, ev, log)
	case ev.Identity != nil:
		c.handleIdentity(ctx, h, ev.Identity, log)
	case ev.Account != nil:
		c.handleAccount(ctx, h, ev.Account, log)
	case ev.Sync != nil:
		c.handleSync(ctx, h, ev.Sync, log)
	}
	h.acks = append(h.acks, ack{seq: ev.Seq, done: done})
	h.drainAcks(ctx, maxUnacked)
	return nil
}

// repoFor returns the crawler's record of did, creating one (created is then true) when
// the event should be taken: in full mode always, in interest mode when blocks touch a
// local account. nil means drop the event.
func (c *Crawler) repoFor(h *host, did string, blocks []byte) (r *remoteRepo, created bool) {
	c.mu.Lock()
	r, ok := c.repos[did]
	c.mu.Unlock()
	if ok {
		return r, false
	}
	// Scanned outside c.mu: the blocks may be large, and every host's goroutine needs c.mu.
	if c.cfg.Mode != ModeFull && !c.touchesLocal(blocks) {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.repos[did]; ok {
		return r, false
	}
	if !h.relay {
		if c.accountsOnLocked(h.name) >= c.cfg.HostAccountLimit {
			h.mu.Lock()
			h.status = HostThrottled
			h.mu.Unlock()
			return nil, false
		}
	}
	r = &remoteRepo{did: did, full: c.cfg.Mode == ModeFull, dirty: true}
	if !h.relay {
		r.setHost(h.name)
	}
	c.repos[did] = r
	return r, true
}

// touchesLocal reports whether b (a commit's blocks) mentions a local account: a like,
// reply, repost, quote, follow or mention of local content is what local users are
// notified of, so interest mode takes it even from accounts nobody here follows. Record
// values are DAG-CBOR, whose strings are plain UTF-8, so a byte scan finds every DID.
func (c *Crawler) touchesLocal(b []byte) bool {
	for {
		i := bytes.Index(b, []byte("did:"))
		if i < 0 {
			return false
		}
		end := i + 4
		for end < len(b) && isDIDByte(b[end]) {
			end++
		}
		if c.deps.IsLocal(string(b[i:end])) {
			return true
		}
		b = b[end:]
	}
}

func isDIDByte(ch byte) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
		ch == '.' || ch == ':' || ch == '_' || ch == '-' || ch == '%'
}

// identityOf returns did's signing key and PDS host, from the repo's cache or a lookup.
// Called with r.mu held.
func (c *Crawler) identityOf(ctx context.Context, r *remoteRepo, refresh bool) (atcrypto.PublicKey, error) {
	if r.key != nil && !refresh {
		return r.key, nil
	}
	did := syntax.DID(r.did)
	if refresh {
		_ = c.deps.Identities.Purge(ctx, did)
	}
	ident, err := c.deps.Identities.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		return nil, err
	}
	key, err := ident.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("signing key of %s: %w", did, err)
	}
	pds, err := hostOf(ident.PDSEndpoint())
	if err != nil {
		return nil, err
	}
	if pds != r.hostName() {
		r.setHost(pds)
		r.dirty = true
	}
	r.key = key
	return key, nil
}

// authoritative reports whether h may speak for r: an upstream relay for anyone, a PDS
// only for the accounts its DID documents say it hosts. Called with r.mu held.
func (c *Crawler) authoritative(h *host, r *remoteRepo) bool {
	return h.relay || r.hostName() == h.name
}

// handleCommit returns the sequencer's acknowledgement channel when it enqueued the
// commit, else nil.
func (c *Crawler) handleCommit(ctx context.Context, h *host, ev *Event, log *slog.Logger) <-chan error {
	did := ev.Commit.Repo
	if _, err := syntax.ParseDID(did); err != nil {
		log.Warn("rejected commit", "reason", "bad repo DID", "err", err)
		return nil
	}
	if c.deps.IsLocal(did) {
		return nil
	}
	r, created := c.repoFor(h, did, ev.Commit.Blocks)
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if created {
		// The index learns the account's handle before its first event.
		c.submitIdentity(ctx, syntax.DID(did), log)
	}
	if r.resyncing {
		if len(r.buffered) >= maxBuffered {
			r.buffered, r.overflow = nil, true
		}
		if !r.overflow {
			r.buffered = append(r.buffered, bufferedEvent{h, ev})
		}
		return nil
	}
	// Only here is the scan of the blocks needed: a followed repo's commits are all taken.
	if !r.full && !c.touchesLocal(ev.Commit.Blocks) {
		return nil
	}
	return c.applyCommit(ctx, h, r, ev, log)
}

// applyCommit verifies one commit against r's head and hands it to the sequencer,
// returning the acknowledgement channel (nil when the commit was not taken). The head
// moves on at once: the next commit of the repo must chain from this one whether or not
// it is durable yet. Called with r.mu held, also while replaying the events buffered
// during a resync (r.resyncing set).
func (c *Crawler) applyCommit(ctx context.Context, h *host, r *remoteRepo, ev *Event, log *slog.Logger) <-chan error {
	cm := ev.Commit
	rev, err := syntax.ParseTID(cm.Rev)
	if err != nil {
		log.Warn("rejected commit", "did", r.did, "rev", cm.Rev, "reason", "bad rev", "err", err)
		return nil
	}
	if r.rev != "" && cm.Rev <= r.rev {
		log.Debug("rejected commit", "did", r.did, "rev", cm.Rev, "reason", "rev not after "+r.rev)
		return nil
	}
	if rev.Time().After(time.Now().Add(revClockSkew)) {
		log.Warn("rejected commit", "did", r.did, "rev", cm.Rev, "reason", "rev in the future")
		return nil
	}
	if r.status != "" && r.status != "active" {
		return nil // a deactivated or taken-down account has no visible commits
	}
	msg := repo.CommitMessage{DID: syntax.DID(r.did), Rev: rev, Commit: cid.Cid(cm.Commit), Blocks: cm.Blocks,
		Ops: make([]repo.Op, 0, len(cm.Ops))}
	if cm.PrevData != nil {
		msg.PrevData = cid.Cid(*cm.PrevData)
	}
	for _, op := range cm.Ops {
		o := repo.Op{Action: repo.Action(op.Action), Path: op.Path}
		if op.Cid != nil {
			o.CID = cid.Cid(*op.Cid)
		}
		if op.Prev != nil {
			o.Prev = cid.Cid(*op.Prev)
		}
		msg.Ops = append(msg.Ops, o)
	}
	key, err := c.identityOf(ctx, r, false)
	if err != nil {
		log.Warn("rejected commit", "did", r.did, "rev", cm.Rev, "reason", "identity", "err", err)
		return nil
	}
	if !c.authoritative(h, r) {
		log.Warn("rejected commit", "did", r.did, "rev", cm.Rev, "reason", "host does not host the account", "pds", r.hostName())
		return nil
	}
	commit, err := repo.VerifyCommitMessage(ctx, msg, key)
	if errors.Is(err, repo.ErrBadSignature) {
		// The key may have rotated since we cached it: look again before giving up.
		if key, err = c.identityOf(ctx, r, true); err == nil {
			commit, err = repo.VerifyCommitMessage(ctx, msg, key)
		}
	}
	if err != nil {
		log.Warn("rejected commit", "did", r.did, "rev", cm.Rev, "reason", "verification", "err", err)
		return nil
	}

	if r.full && r.data.Defined() {
		gap := false
		if msg.PrevData.Defined() {
			gap = msg.PrevData != r.data
		} else {
			gap = cm.Since == nil || *cm.Since != r.rev
		}
		if gap && time.Now().Before(r.retryAt) {
			return nil // the last resync failed moments ago; this commit cannot be chained
		}
		if gap {
			log.Info("repo desynchronized: commit does not follow the known head; resyncing", "did", r.did, "rev", cm.Rev, "head", r.rev)
			if r.resyncing {
				r.overflow = true // replaying: resync again once this one ends
				return nil
			}
			c.startResync(r)
			r.buffered = append(r.buffered, bufferedEvent{h, ev})
			return nil
		}
	}

	out := &Event{Commit: cm, Remote: true}
	done, err := c.seq.Enqueue(ctx, out)
	if err != nil {
		log.Warn("sequencing a crawled commit failed", "did", r.did, "rev", cm.Rev, "err", err)
		return nil
	}
	r.rev, r.data, r.dirty = cm.Rev, commit.Data, true
	return done
}

// speaker returns did's tracked repo, locked (the caller unlocks it), and its signing key
// when h may speak for the account; the key is looked up afresh when refresh is set. It
// returns nil, after logging why, when the kind event is to be dropped.
func (c *Crawler) speaker(ctx context.Context, h *host, did, kind string, refresh bool, log *slog.Logger) (*remoteRepo, atcrypto.PublicKey) {
	if _, err := syntax.ParseDID(did); err != nil || c.deps.IsLocal(did) {
		return nil, nil
	}
	c.mu.Lock()
	r, ok := c.repos[did]
	c.mu.Unlock()
	if !ok {
		return nil, nil
	}
	r.mu.Lock()
	key, err := c.identityOf(ctx, r, refresh)
	if err != nil {
		r.mu.Unlock()
		log.Warn("rejected "+kind, "did", did, "err", err)
		return nil, nil
	}
	if !c.authoritative(h, r) {
		r.mu.Unlock()
		log.Warn("rejected "+kind, "did", did, "reason", "host does not host the account", "pds", r.hostName())
		return nil, nil
	}
	return r, key
}

func (c *Crawler) handleIdentity(ctx context.Context, h *host, body *comatproto.SyncSubscribeRepos_Identity, log *slog.Logger) {
	r, _ := c.speaker(ctx, h, body.Did, KindIdentity, true, log)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	c.submitIdentity(ctx, syntax.DID(body.Did), log)
}

// submitIdentity sequences an #identity carrying did's verified handle.
func (c *Crawler) submitIdentity(ctx context.Context, did syntax.DID, log *slog.Logger) {
	ident, err := c.deps.Identities.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		log.Warn("identity lookup failed", "did", did, "err", err)
		return
	}
	ev := NewIdentity(did, ident.Handle)
	ev.Remote = true
	if _, err := c.seq.Submit(ctx, ev); err != nil {
		log.Warn("sequencing a crawled #identity failed", "err", err)
	}
}

func (c *Crawler) handleAccount(ctx context.Context, h *host, body *comatproto.SyncSubscribeRepos_Account, log *slog.Logger) {
	r, _ := c.speaker(ctx, h, body.Did, KindAccount, false, log)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	status := ""
	if body.Status != nil {
		status = *body.Status
	}
	if body.Active {
		status = ""
	}
	r.status, r.dirty = status, true
	ev := NewAccount(syntax.DID(body.Did), body.Active, status)
	ev.Remote = true
	if _, err := c.seq.Submit(ctx, ev); err != nil {
		log.Warn("sequencing a crawled #account failed", "err", err)
	}
}

// handleSync takes a host's declaration of a repo's new state: for a followed repo newer
// than what we hold, fetch it whole.
func (c *Crawler) handleSync(ctx context.Context, h *host, body *comatproto.SyncSubscribeRepos_Sync, log *slog.Logger) {
	r, key := c.speaker(ctx, h, body.Did, KindSync, false, log)
	if r == nil {
		return
	}
	defer r.mu.Unlock()
	if r.rev != "" && body.Rev <= r.rev {
		return
	}
	car, err := repo.ParseCAR(body.Blocks, repo.CARLimits{MaxBytes: maxSyncBlocks, MaxBlocks: 4, MaxBlockSize: maxSyncBlocks, MaxHeaderSize: 1024})
	if err != nil || len(car.Roots) == 0 {
		log.Warn("rejected #sync", "did", body.Did, "err", err)
		return
	}
	block, _ := car.Get(car.Roots[0])
	commit, err := repo.DecodeCommit(block)
	if err == nil && (string(commit.DID) != body.Did || string(commit.Rev) != body.Rev) {
		err = errors.New("commit does not match the message")
	}
	if err == nil {
		err = commit.Verify(key)
	}
	if err != nil {
		log.Warn("rejected #sync", "did", body.Did, "err", err)
		return
	}
	if r.full && !r.resyncing {
		c.startResync(r)
	}
}

// startResync marks r resyncing and queues it. Called with r.mu held.
func (c *Crawler) startResync(r *remoteRepo) {
	if r.resyncing {
		return
	}
	r.resyncing = true
	select {
	case c.resyncs <- r.did:
	default:
		r.resyncing, r.buffered = false, nil
		c.log.Warn("resync queue full; the repo will resync on its next gap", "did", r.did)
	}
}

func (c *Crawler) resyncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case did := <-c.resyncs:
			c.resync(ctx, did)
		}
	}
}

// resync fetches, verifies and indexes a whole repo, then replays the events that arrived
// meanwhile, in order. It returns the number of records fetched. The caller has set
// r.resyncing.
func (c *Crawler) resync(ctx context.Context, did string) (int, error) {
	c.mu.Lock()
	r := c.repos[did]
	c.mu.Unlock()
	log := c.log.With("did", did)
	start := time.Now()
	log.Info("backfilling repo")
	n, err := c.backfill(ctx, r)

	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("backfill failed", "err", err)
		}
		r.resyncing, r.buffered, r.overflow = false, nil, false
		r.retryAt = time.Now().Add(resyncRetry)
		return 0, err
	}
	log.Info("backfilled repo", "records", n, "rev", r.rev, "took", time.Since(start).Round(time.Millisecond))
	for len(r.buffered) > 0 {
		be := r.buffered[0]
		r.buffered = r.buffered[1:]
		if done := c.applyCommit(ctx, be.h, r, be.ev, log); done != nil {
			select {
			case <-done:
			case <-ctx.Done():
			}
		}
	}
	r.resyncing, r.buffered = false, nil
	if r.overflow {
		r.overflow = false
		c.startResync(r)
	}
	return n, nil
}

// backfill downloads r's repo from its PDS, verifies it and hands it to the index; it
// returns the number of records.
func (c *Crawler) backfill(ctx context.Context, r *remoteRepo) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	did := syntax.DID(r.did)
	_ = c.deps.Identities.Purge(ctx, did)
	ident, err := c.deps.Identities.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		return 0, err
	}
	key, err := ident.PublicKey()
	if err != nil {
		return 0, fmt.Errorf("signing key: %w", err)
	}
	endpoint := ident.PDSEndpoint()
	pds, err := hostOf(endpoint)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/xrpc/com.atproto.sync.getRepo?did="+url.QueryEscape(r.did), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.deps.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("getRepo: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("getRepo: status %d from %s", resp.StatusCode, pds)
	}
	car, err := repo.ReadCAR(resp.Body, repo.DefaultCARLimits())
	if err != nil {
		return 0, fmt.Errorf("getRepo: %w", err)
	}
	v, err := repo.VerifyRepoCAR(ctx, did, car, key)
	if err != nil {
		return 0, fmt.Errorf("getRepo: %w", err)
	}
	r.mu.Lock()
	head := r.rev
	r.mu.Unlock()
	if head != "" && string(v.Commit.Rev) < head {
		return 0, fmt.Errorf("getRepo: rev %s is older than the known %s", v.Commit.Rev, head)
	}

	c.submitIdentity(ctx, did, c.log)
	sync, err := NewSync(did, v.Commit.Rev, v.CommitCID, v.CommitBytes)
	if err != nil {
		return 0, err
	}
	sync.Remote = true
	seq, err := c.seq.Submit(ctx, sync)
	if err != nil {
		return 0, err
	}
	if err := c.deps.Backfill(ctx, did, seq, v); err != nil {
		return 0, fmt.Errorf("index: %w", err)
	}
	r.mu.Lock()
	r.rev, r.data, r.key, r.dirty = string(v.Commit.Rev), v.Commit.Data, key, true
	r.setHost(pds)
	r.mu.Unlock()
	return len(v.Records), nil
}
