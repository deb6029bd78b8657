package node

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/aerie-social/aerie/appview"
	"github.com/aerie-social/aerie/blobs"
	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/node/sqlite"
	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
	"github.com/aerie-social/aerie/web"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Node is one running Aerie: its databases, components and HTTP listener.
type Node struct {
	cfg     Config
	version string
	log     *slog.Logger

	lock     *os.File
	db       *sqlite.DB
	accounts accountRows
	hosted   hostedDIDs
	tokens   *tokenIssuer
	limiter  *rateLimiter
	mail     *mailer
	repos    *repo.Store
	seq      *relay.Sequencer
	plc      documentDirectory
	plcDir   *identity.Directory // the embedded directory, when this node runs one
	plcLn    net.Listener
	plcHTTP  *http.Server
	firehose *relay.Firehose
	crawler  *relay.Crawler
	// relayStream, relayHTTP and relayLn serve the relay stream (local and crawled
	// events) on relay.listen, when set.
	relayStream *relay.Firehose
	relayHTTP   *http.Server
	relayLn     net.Listener
	blobs       *blobs.Store
	appview     *appview.AppView
	web         *web.Server
	// ident resolves identities and verifies service auth; one per node, as it holds the
	// service-JWT replay cache.
	ident *identityService
	ln    net.Listener
	http  *http.Server
	// clock is time.Now except in tests that move time.
	clock func() time.Time
}

// New opens the data directory, migrates the service database and binds the listener, so
// that a port or disk problem fails here, before anything runs. It starts no goroutine.
// On error it closes whatever it had opened.
func New(ctx context.Context, cfg Config, version string, log *slog.Logger) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	n := &Node{cfg: cfg, version: version, log: log, clock: time.Now}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if n.lock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	migrations, _ := fs.Sub(migrationFiles, "migrations")
	n.db, err = sqlite.Open(ctx, filepath.Join(cfg.DataDir, "aerie.sqlite"), sqlite.Options{
		Synchronous: cfg.DB.Synchronous,
		Migrations:  migrations,
	})
	if err != nil {
		return nil, err
	}
	if err := n.recordStart(ctx); err != nil {
		return nil, err
	}
	jwtSecret, err := n.serviceSecret(ctx, "session_hs256", 32)
	if err != nil {
		return nil, err
	}
	n.mail = &mailer{cfg: cfg.Email, log: log}
	repoCfg := cfg.Repo
	repoCfg.Synchronous = cfg.DB.Synchronous
	if n.repos, err = repo.Open(ctx, cfg.DataDir, repoCfg, log); err != nil {
		return nil, err
	}
	relayCfg := cfg.Relay
	relayCfg.Synchronous = cfg.DB.Synchronous
	if n.seq, err = relay.Open(ctx, filepath.Join(cfg.DataDir, "relay.sqlite"), relayCfg, log); err != nil {
		return nil, err
	}
	n.firehose = relay.NewFirehose(n.seq, relay.LocalEvents, log)
	blobCfg := cfg.Blobs
	blobCfg.AllowPrivateNetwork = cfg.Net.AllowPrivateNetwork
	blobCfg.Synchronous = cfg.DB.Synchronous
	n.blobs, err = blobs.Open(ctx, filepath.Join(cfg.DataDir, "blobs"), filepath.Join(cfg.DataDir, "cache"), blobCfg,
		blobs.Deps{Accounts: n, Refs: n.repos, Resolver: n, Now: n.clock}, log)
	if err != nil {
		return nil, err
	}
	if err := n.openPLC(ctx); err != nil {
		return nil, err
	}
	n.limiter = newRateLimiter(func() time.Time { return n.clock() })
	n.tokens = &tokenIssuer{secret: jwtSecret, serviceDID: n.serviceDID(), now: func() time.Time { return n.clock() }}
	if n.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	avCfg := cfg.AppView
	avCfg.PublicURL = n.PublicURL()
	avCfg.Synchronous = cfg.DB.Synchronous
	if err := n.hosted.load(ctx, n); err != nil {
		return nil, err
	}
	avCfg.Hosted = n.hosted.has
	if n.appview, err = appview.Open(ctx, filepath.Join(cfg.DataDir, "index.sqlite"), avCfg, log); err != nil {
		return nil, err
	}
	cookieKey, err := n.serviceSecret(ctx, "web_cookie_hmac", 32)
	if err != nil {
		return nil, err
	}
	if n.web, err = web.New(web.Config{PublicURL: n.PublicURL(), CookieKey: cookieKey}, webBackend{n}, n.appview, log); err != nil {
		return nil, err
	}
	n.ident = newIdentityService(n, identityOptions{})
	n.crawler = n.newCrawler()
	if cfg.Relay.Listen != "" {
		if n.relayLn, err = net.Listen("tcp", cfg.Relay.Listen); err != nil {
			return nil, fmt.Errorf("listen for the relay stream: %w", err)
		}
		n.relayHTTP = n.relayStreamServer()
	}
	n.http = &http.Server{
		Handler:           n.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return n, nil
}

// Addr returns the address the node's HTTP server listens on (useful when Listen had port 0).
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// PublicURL is the base URL other servers and clients use to reach this node: the real
// listening address for a localhost node, https://hostname otherwise.
func (n *Node) PublicURL() string {
	if n.cfg.IsLocal() {
		return "http://" + n.ln.Addr().String()
	}
	return "https://" + n.cfg.Hostname
}

// serviceDID is the node's own DID, did:web of its hostname: the audience of its session
// tokens and the DID clients and relays see in describeServer.
func (n *Node) serviceDID() string { return "did:web:" + n.cfg.Hostname }

// Run serves until ctx ends, then shuts down gracefully: in-flight requests get
// http.shutdown_timeout to finish, firehose streams close, the sequencer logs every commit
// it was handed, and every database is closed. It returns nil after a clean shutdown.
func (n *Node) Run(ctx context.Context) error {
	n.log.Info("listening", "addr", n.ln.Addr().String(), "url", n.PublicURL(),
		"version", n.version, "data_dir", n.cfg.DataDir, "hostname", n.cfg.Hostname)

	// The core outlives the HTTP server: requests still draining after ctx ends sequence
	// their commits, so the core stops only once the front has.
	core, stopCore := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCore()
	cg, coreCtx := errgroup.WithContext(core)
	cg.Go(func() error { return n.seq.Run(coreCtx) })
	cg.Go(func() error { return n.repos.Run(coreCtx) })
	cg.Go(func() error { return n.blobs.Run(coreCtx) })
	cg.Go(func() error { return n.appview.Run(coreCtx, n.seq) })
	cg.Go(func() error { return n.reindexLoop(coreCtx) })
	cg.Go(func() error { return n.limiter.Run(coreCtx) })
	cg.Go(func() error { return n.crawler.Run(coreCtx) })

	err := n.repairAfterCrash(ctx)
	repaired := err == nil
	if !repaired && ctx.Err() != nil {
		// Stopped while starting: not a failure, and the next start repairs instead.
		err = nil
	}
	if repaired {
		// The front stops when ctx ends or when a core component fails.
		front, stopFront := context.WithCancel(ctx)
		defer context.AfterFunc(coreCtx, stopFront)()
		fg, frontCtx := errgroup.WithContext(front)
		fg.Go(func() error { return n.firehose.Run(frontCtx) })
		fg.Go(func() error {
			n.requestCrawls(frontCtx)
			return nil
		})
		fg.Go(func() error { return n.serve(frontCtx, "http", n.http, n.ln) })
		fg.Go(func() error {
			n.syncInterest(frontCtx)
			return nil
		})
		if n.relayHTTP != nil {
			fg.Go(func() error { return n.relayStream.Run(frontCtx) })
			fg.Go(func() error { return n.serve(frontCtx, "relay", n.relayHTTP, n.relayLn) })
		}
		if n.plcHTTP != nil {
			fg.Go(func() error { return n.serve(frontCtx, "plc", n.plcHTTP, n.plcLn) })
		}
		err = fg.Wait()
		stopFront()
	}
	stopCore()
	err = errors.Join(err, cg.Wait())
	if err == nil && repaired {
		err = n.markCleanShutdown(context.WithoutCancel(ctx))
	}
	n.log.Info("stopped")
	return errors.Join(err, n.close())
}

// serve runs srv on ln until ctx ends, then shuts it down gracefully.
func (n *Node) serve(ctx context.Context, name string, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", name, err)
	case <-ctx.Done():
	}
	n.log.Info("shutting down", "server", name, "timeout", n.cfg.HTTP.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(n.cfg.HTTP.ShutdownTimeout))
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc // Serve returns ErrServerClosed once Shutdown starts
	if err != nil {
		srv.Close()
		return fmt.Errorf("shut down %s: %w", name, err)
	}
	return nil
}

// openPLC sets up the PLC directory: the embedded one (with its listener when
// plc.listen is set) or a client of a remote one.
func (n *Node) openPLC(ctx context.Context) error {
	if !n.cfg.EmbeddedPLC() {
		n.plc = identity.NewPLCClient(n.cfg.PLCURL(), identity.NewHTTPClient(n.cfg.Net.AllowPrivateNetwork, 10*time.Second))
		return nil
	}
	dir, err := identity.OpenDirectory(ctx, filepath.Join(n.cfg.DataDir, "plc.sqlite"), n.log,
		identity.DirectoryOptions{Synchronous: n.cfg.DB.Synchronous, Now: n.clock})
	if err != nil {
		return err
	}
	n.plcDir, n.plc = dir, embeddedPLC{dir}
	if n.cfg.PLC.Listen == "" {
		return nil
	}
	if n.plcLn, err = net.Listen("tcp", n.cfg.PLC.Listen); err != nil {
		return fmt.Errorf("listen for the embedded PLC directory: %w", err)
	}
	n.plcHTTP = &http.Server{
		Handler:           requestMiddleware(n.log.With("server", "plc"))(dir.Handler()),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	return nil
}

// PLCAddr returns the embedded PLC directory's listening address, or nil.
func (n *Node) PLCAddr() net.Addr {
	if n.plcLn == nil {
		return nil
	}
	return n.plcLn.Addr()
}

// close releases everything New opened, in reverse order.
func (n *Node) close() error {
	var errs []error
	if n.ln != nil {
		// Run closes the listener through Shutdown; closing twice only reports "use of closed".
		if err := n.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n.relayLn != nil {
		if err := n.relayLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n.plcLn != nil {
		if err := n.plcLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n.plcDir != nil {
		errs = append(errs, n.plcDir.Close())
	}
	if n.appview != nil {
		errs = append(errs, n.appview.Close())
	}
	if n.blobs != nil {
		errs = append(errs, n.blobs.Close())
	}
	if n.seq != nil {
		errs = append(errs, n.seq.Close())
	}
	if n.repos != nil {
		errs = append(errs, n.repos.Close())
	}
	if n.db != nil {
		errs = append(errs, n.db.Close())
	}
	if n.lock != nil {
		errs = append(errs, n.lock.Close())
	}
	return errors.Join(errs...)
}

// recordStart notes in the service database when it was created and which version opened it.
func (n *Node) recordStart(ctx context.Context) error {
	now := time.Now().UTC().Format(time.RFC3339)
	return n.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('created_at', ?) ON CONFLICT DO NOTHING`, now); err != nil {
			return fmt.Errorf("record creation time: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('last_version', ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, n.version); err != nil {
			return fmt.Errorf("record version: %w", err)
		}
		return nil
	})
}

// lockDataDir takes an exclusive lock on the data directory, because two processes writing
// the same SQLite files and blob folders would corrupt each other's view of the repos.
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "aerie.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another aerie process", dir)
	}
	return f, nil
}
