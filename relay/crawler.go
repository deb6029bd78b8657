package relay

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"golang.org/x/time/rate"

	"github.com/aerie-social/aerie/repo"
)

const (
	// stateFlushInterval is how often host cursors and repo heads are written to relay.sqlite:
	// a crash replays at most this much of each stream, and the rev check drops the repeats.
	stateFlushInterval = 500 * time.Millisecond
	// resyncWorkers bounds concurrent getRepo downloads.
	resyncWorkers = 2
	// resyncQueue bounds waiting resyncs; more are dropped and come back on the repo's
	// next gap.
	resyncQueue = 1024
	// maxBuffered bounds the events held for one repo while it resyncs; beyond it they are
	// dropped and the repo is resynced again afterwards, which covers them.
	maxBuffered = 1000
)

// ErrHostBanned is returned by RequestCrawl for a host an operator banned.
var ErrHostBanned = errors.New("relay: host banned")

// ErrHostNotFound is returned by HostStatus for a host the crawler does not know.
var ErrHostNotFound = errors.New("relay: host not found")

// Identities resolves DIDs for the crawler; node/identity's Resolver is one. Lookups are
// expected to be cached, and Purge to drop the cache entry (after an #identity event).
type Identities interface {
	LookupIdentity(ctx context.Context, atid syntax.AtIdentifier) (*identity.Identity, error)
	Purge(ctx context.Context, did syntax.DID) error
}

// CrawlerDeps is what the crawler needs from the rest of the node.
type CrawlerDeps struct {
	Identities Identities
	// HTTP makes every outbound request (firehose dials, getRepo, requestCrawl), with the
	// node's private-network guard.
	HTTP *http.Client
	// IsLocal reports whether did is hosted on this node: its events come from the repo
	// write path, never from the crawler.
	IsLocal func(did string) bool
	// Backfill hands a verified full repo to the index, after the crawler sequenced the
	// #sync event (at syncSeq) announcing it; the index must end up holding exactly its
	// records.
	Backfill func(ctx context.Context, did syntax.DID, syncSeq int64, r *repo.VerifiedRepo) error
	// Announce is this node's host, sent with requestCrawl to the hosts of accounts local
	// users follow so that they crawl this node back; empty sends nothing.
	Announce string
}

// remoteRepo is the crawler's view of one remote repository.
type remoteRepo struct {
	mu  sync.Mutex
	did string
	// host is the PDS that hosts it, as last resolved. It is atomic so that counting a
	// host's accounts (under Crawler.mu) never waits for a repo busy with the network.
	host atomic.Pointer[string]
	// full repos (followed accounts) were backfilled and every commit is taken; others
	// only contribute events that touch local accounts.
	full   bool
	rev    string
	data   cid.Cid // tree root at rev; Undef until known
	status string  // hosting status from #account; "" is active
	key    atcrypto.PublicKey
	dirty  bool

	resyncing bool
	buffered  []bufferedEvent
	overflow  bool // buffered events were dropped: resync again after this one
	// retryAt holds off another resync after a failed one.
	retryAt time.Time
	// wantedAt is when Want last followed the repo; an interest sweep that began before
	// then must not drop it.
	wantedAt time.Time
}

func (r *remoteRepo) hostName() string {
	if p := r.host.Load(); p != nil {
		return *p
	}
	return ""
}

func (r *remoteRepo) setHost(h string) { r.host.Store(&h) }

type bufferedEvent struct {
	h  *host
	ev *Event
}

// Crawler subscribes to other hosts' firehoses, verifies every event and hands the verified
// ones to the sequencer as remote events. Build it with NewCrawler and run it with Run.
type Crawler struct {
	seq  *Sequencer
	cfg  Config
	deps CrawlerDeps
	log  *slog.Logger
	// frameTimeout is the const of that name; tests shorten it.
	frameTimeout time.Duration

	mu        sync.Mutex
	hosts     map[string]*host
	repos     map[string]*remoteRepo
	announced map[string]bool
	started   chan *host // hosts added while running, for Run to start

	resyncs chan string
}

// NewCrawler returns a crawler feeding seq. It reads its state from the sequencer's
// database in Run; it starts no goroutine.
func NewCrawler(seq *Sequencer, cfg Config, deps CrawlerDeps, log *slog.Logger) *Crawler {
	return &Crawler{
		seq:          seq,
		cfg:          cfg,
		deps:         deps,
		log:          log.With("component", "crawler"),
		frameTimeout: frameTimeout,
		hosts:        map[string]*host{},
		repos:        map[string]*remoteRepo{},
		announced:    map[string]bool{},
		started:      make(chan *host, 64),
		resyncs:      make(chan string, resyncQueue),
	}
}

// Run loads the crawl state, subscribes to every known and configured host and keeps
// crawling until ctx ends; then it saves cursors and repo heads and returns nil.
func (c *Crawler) Run(ctx context.Context) error {
	if err := c.load(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	for _, h := range c.cfg.Upstreams {
		if _, err := c.addHost(ctx, h, true); err != nil {
			c.log.Warn("configured upstream relay skipped", "host", h, "err", err)
		}
	}
	for _, h := range c.cfg.Hosts {
		if _, err := c.addHost(ctx, h, false); err != nil {
			c.log.Warn("configured host skipped", "host", h, "err", err)
		}
	}
	var wg sync.WaitGroup
	start := func(h *host) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !h.running && h.status != HostBanned {
			h.running = true
			wg.Go(func() { c.runHost(ctx, h) })
		}
	}
	c.mu.Lock()
	hosts := make([]*host, 0, len(c.hosts))
	for _, h := range c.hosts {
		hosts = append(hosts, h)
	}
	c.mu.Unlock()
	for _, h := range hosts {
		start(h)
	}
	for range resyncWorkers {
		wg.Go(func() { c.resyncLoop(ctx) })
	}
	tick := time.NewTicker(stateFlushInterval)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case h := <-c.started:
			start(h)
		case <-tick.C:
			if err := c.flush(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("saving crawl state", "err", err)
			}
		}
	}
	wg.Wait()
	if err := c.flush(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("save crawl state: %w", err)
	}
	return nil
}

// load reads hosts and remote repos from relay.sqlite.
func (c *Crawler) load(ctx context.Context) error {
	return c.seq.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT hostname, relay, cursor, status, last_error FROM hosts`)
		if err != nil {
			return fmt.Errorf("load hosts: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			h := &host{}
			if err := rows.Scan(&h.name, &h.relay, &h.cursor, &h.status, &h.lastErr); err != nil {
				return fmt.Errorf("load hosts: %w", err)
			}
			h.saved = h.cursor
			if !h.relay {
				h.limiter = c.newLimiter()
			}
			c.mu.Lock()
			if _, ok := c.hosts[h.name]; !ok { // added before Run: keep that one
				c.hosts[h.name] = h
			}
			c.mu.Unlock()
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("load hosts: %w", err)
		}
		rows, err = tx.QueryContext(ctx, `SELECT did, host, full, rev, data, status FROM remote_repos`)
		if err != nil {
			return fmt.Errorf("load remote repos: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			r := &remoteRepo{}
			var data []byte
			var host string
			if err := rows.Scan(&r.did, &host, &r.full, &r.rev, &data, &r.status); err != nil {
				return fmt.Errorf("load remote repos: %w", err)
			}
			r.setHost(host)
			if data != nil {
				if r.data, err = cid.Cast(data); err != nil {
					return fmt.Errorf("load remote repo %s: %w", r.did, err)
				}
			}
			c.mu.Lock()
			if _, ok := c.repos[r.did]; !ok {
				c.repos[r.did] = r
			}
			c.mu.Unlock()
		}
		return rows.Err()
	})
}

func (c *Crawler) newLimiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(c.cfg.HostRate), 10*c.cfg.HostRate)
}

// flush writes changed cursors and repo heads in one transaction.
func (c *Crawler) flush(ctx context.Context) error {
	type hostRow struct {
		h      *host
		cursor int64
	}
	type repoRow struct {
		r                      *remoteRepo
		did, host, rev, status string
		full                   bool
		data                   []byte
	}
	var hosts []hostRow
	c.mu.Lock()
	for _, h := range c.hosts {
		h.mu.Lock()
		if h.cursor != h.saved {
			hosts = append(hosts, hostRow{h, h.cursor})
		}
		h.mu.Unlock()
	}
	all := make([]*remoteRepo, 0, len(c.repos))
	for _, r := range c.repos {
		all = append(all, r)
	}
	c.mu.Unlock()
	// Rows are copied before the transaction and a busy repo is left for the next round:
	// a repo's lock is held across Submit, which needs the writer connection this
	// transaction would hold.
	var repos []repoRow
	for _, r := range all {
		if !r.mu.TryLock() {
			continue
		}
		if r.dirty {
			row := repoRow{r: r, did: r.did, host: r.hostName(), rev: r.rev, status: r.status, full: r.full}
			if r.data.Defined() {
				row.data = r.data.Bytes()
			}
			r.dirty = false
			repos = append(repos, row)
		}
		r.mu.Unlock()
	}
	if len(hosts) == 0 && len(repos) == 0 {
		return nil
	}
	err := c.seq.db.Write(ctx, func(tx *sql.Tx) error {
		// Prepared once for the file, not per row: a busy crawl rewrites the head of every
		// active repo each round, and parsing the upsert each time cost more than running it.
		upCursor, err := c.seq.db.Stmt(ctx, tx, `UPDATE hosts SET cursor = ? WHERE hostname = ?`)
		if err != nil {
			return err
		}
		for _, hr := range hosts {
			if _, err := upCursor.ExecContext(ctx, hr.cursor, hr.h.name); err != nil {
				return err
			}
		}
		upRepo, err := c.seq.db.Stmt(ctx, tx, `INSERT INTO remote_repos (did, host, full, rev, data, status) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (did) DO UPDATE SET host = excluded.host, full = excluded.full, rev = excluded.rev,
					data = excluded.data, status = excluded.status`)
		if err != nil {
			return err
		}
		for _, row := range repos {
			if _, err := upRepo.ExecContext(ctx, row.did, row.host, row.full, row.rev, row.data, row.status); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for _, row := range repos {
			row.r.mu.Lock()
			row.r.dirty = true
			row.r.mu.Unlock()
		}
		return err
	}
	for _, hr := range hosts {
		hr.h.mu.Lock()
		hr.h.saved = hr.cursor
		hr.h.mu.Unlock()
	}
	return nil
}

// addHost registers a host (persisted) and, when Run is running, starts crawling it. It
// returns whether the host is new.
func (c *Crawler) addHost(ctx context.Context, name string, relay bool) (bool, error) {
	name, err := parseHost(name, c.cfg.AllowPrivateNetwork)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	if h, ok := c.hosts[name]; ok {
		c.mu.Unlock()
		if h.status == HostBanned {
			return false, fmt.Errorf("%w: %s", ErrHostBanned, name)
		}
		return false, nil
	}
	h := &host{name: name, relay: relay, status: HostIdle}
	if !relay {
		h.limiter = c.newLimiter()
	}
	c.hosts[name] = h
	c.mu.Unlock()
	err = c.seq.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO hosts (hostname, relay, added) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			name, relay, time.Now().UnixMicro())
		return err
	})
	if err != nil {
		c.mu.Lock()
		delete(c.hosts, name)
		c.mu.Unlock()
		return false, fmt.Errorf("add host %s: %w", name, err)
	}
	c.log.Info("new host to crawl", "host", name, "relay", relay)
	select {
	case c.started <- h:
	default:
		// Run is not draining (not started yet, or stopping): it starts every known
		// host when it begins, so nothing is lost.
	}
	return true, nil
}

// RequestCrawl answers com.atproto.sync.requestCrawl: the host must answer
// describeServer (so it is a live PDS), then it is crawled from now on.
func (c *Crawler) RequestCrawl(ctx context.Context, hostname string) error {
	name, err := parseHost(hostname, c.cfg.AllowPrivateNetwork)
	if err != nil {
		return err
	}
	c.mu.Lock()
	h, known := c.hosts[name]
	c.mu.Unlock()
	if known && h.status == HostBanned {
		return fmt.Errorf("%w: %s", ErrHostBanned, name)
	}
	if known {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hostURL(name, "http")+"/xrpc/com.atproto.server.describeServer", nil)
	if err != nil {
		return err
	}
	resp, err := c.deps.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s does not answer describeServer: %w", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered describeServer with status %d", name, resp.StatusCode)
	}
	_, err = c.addHost(ctx, name, false)
	return err
}

// HostInfo is one host as listHosts and getHostStatus show it.
type HostInfo struct {
	Hostname     string `json:"hostname"`
	Seq          int64  `json:"seq"`
	AccountCount int64  `json:"accountCount"`
	Status       string `json:"status"`
	// Connected and LastError are for operators (logs, admin pages); not in the lexicon.
	Connected bool   `json:"-"`
	LastError string `json:"-"`
}

// ListHosts returns up to limit hosts after cursor (a hostname), in name order, and the
// cursor for the next page ("" at the end).
func (c *Crawler) ListHosts(cursor string, limit int) ([]HostInfo, string) {
	c.mu.Lock()
	names := make([]string, 0, len(c.hosts))
	for n := range c.hosts {
		if n > cursor {
			names = append(names, n)
		}
	}
	c.mu.Unlock()
	slices.Sort(names)
	next := ""
	if len(names) > limit {
		names = names[:limit]
		next = names[limit-1]
	}
	out := make([]HostInfo, 0, len(names))
	for _, n := range names {
		if info, err := c.HostStatus(n); err == nil {
			out = append(out, info)
		}
	}
	return out, next
}

// HostStatus returns what the crawler knows of one host, or ErrHostNotFound.
func (c *Crawler) HostStatus(hostname string) (HostInfo, error) {
	name := strings.ToLower(hostname)
	c.mu.Lock()
	h, ok := c.hosts[name]
	var accounts int64
	if ok {
		accounts = int64(c.accountsOnLocked(name))
	}
	c.mu.Unlock()
	if !ok {
		return HostInfo{}, fmt.Errorf("%w: %s", ErrHostNotFound, hostname)
	}
	cursor, status, connected, lastErr := h.snapshot()
	return HostInfo{Hostname: name, Seq: cursor, AccountCount: accounts, Status: status, Connected: connected, LastError: lastErr}, nil
}

// accountsOnLocked counts the remote repos hosted on host. Called with c.mu held.
func (c *Crawler) accountsOnLocked(host string) int {
	n := 0
	for _, r := range c.repos {
		if r.hostName() == host {
			n++
		}
	}
	return n
}

// BackfillNow follows did (as Want does) and fetches its repo now, returning once the
// index holds it: `aerie backfill`. It returns the number of records and the repo's rev.
func (c *Crawler) BackfillNow(ctx context.Context, did syntax.DID) (int, string, error) {
	if c.deps.IsLocal(did.String()) {
		return 0, "", fmt.Errorf("%s is hosted on this node", did)
	}
	if err := c.track(ctx, did); err != nil {
		return 0, "", err
	}
	c.mu.Lock()
	r := c.repos[did.String()]
	c.mu.Unlock()
	// Wait out a resync already under way, then run ours in this goroutine.
	for {
		r.mu.Lock()
		if !r.resyncing {
			r.resyncing = true
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	n, err := c.resync(ctx, did.String())
	if err != nil {
		return 0, "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return n, r.rev, nil
}

// Want adds did to the interest set as a followed account: its PDS is crawled (unless an
// upstream relay carries everything), its repo is backfilled, and from then on every one
// of its commits is indexed. Local accounts and accounts already followed are ignored.
func (c *Crawler) Want(ctx context.Context, did syntax.DID) error {
	if c.deps.IsLocal(did.String()) || c.Tracked(did) {
		return nil
	}
	if err := c.track(ctx, did); err != nil {
		return err
	}
	c.Resync(did)
	return nil
}

// track marks did followed, with its host crawled and asked to crawl us back.
func (c *Crawler) track(ctx context.Context, did syntax.DID) error {
	// Resolve first: an account that does not resolve leaves no trace.
	ident, err := c.deps.Identities.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		return fmt.Errorf("follow %s: %w", did, err)
	}
	pds, err := hostOf(ident.PDSEndpoint())
	if err != nil {
		return fmt.Errorf("follow %s: %w", did, err)
	}
	c.mu.Lock()
	r, ok := c.repos[did.String()]
	if !ok {
		r = &remoteRepo{did: did.String()}
		c.repos[r.did] = r
	}
	c.mu.Unlock()
	r.mu.Lock()
	r.full, r.dirty, r.wantedAt = true, true, time.Now()
	r.setHost(pds)
	r.mu.Unlock()
	if len(c.cfg.Upstreams) == 0 {
		if _, err := c.addHost(ctx, pds, false); err != nil {
			return fmt.Errorf("follow %s: crawl its host: %w", did, err)
		}
	}
	c.announce(ctx, pds)
	return nil
}

// announce asks pds once to crawl this node, so replies and likes from local users reach
// the followed account's own server.
func (c *Crawler) announce(ctx context.Context, pds string) {
	c.mu.Lock()
	if c.deps.Announce == "" || c.announced[pds] || pds == c.deps.Announce {
		c.mu.Unlock()
		return
	}
	c.announced[pds] = true
	c.mu.Unlock()
	body, _ := json.Marshal(map[string]string{"hostname": c.deps.Announce})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hostURL(pds, "http")+"/xrpc/com.atproto.sync.requestCrawl", bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.deps.HTTP.Do(req)
	if err != nil {
		c.log.Info("requestCrawl to a followed account's host failed", "host", pds, "err", err)
		return
	}
	resp.Body.Close()
	// Most PDSes are not relays and answer 501: then only relays carry our events there.
	c.log.Debug("asked a host to crawl this node", "host", pds, "status", resp.StatusCode)
}

// Resync queues a full re-fetch of did's repo (getRepo), verified, replacing what the index
// holds for it. Events for it that arrive meanwhile wait and are applied after.
func (c *Crawler) Resync(did syntax.DID) {
	c.mu.Lock()
	r, ok := c.repos[did.String()]
	c.mu.Unlock()
	if !ok {
		return
	}
	r.mu.Lock()
	c.startResync(r)
	r.mu.Unlock()
}

// Tracked reports whether the crawler follows did's repo (backfilled, every commit taken).
func (c *Crawler) Tracked(did syntax.DID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.repos[did.String()]
	return ok && r.full
}
