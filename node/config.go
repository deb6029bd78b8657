package node

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/appview"
	"github.com/aerie-social/aerie/blobs"
	"github.com/aerie-social/aerie/node/sqlite"
	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

// Config is the whole node's configuration. Every field has a TOML key; the environment
// variable AERIE_<SECTION>_<KEY> (upper-cased) overrides it, and an empty variable means unset.
type Config struct {
	// Listen is the main HTTP address (host:port). Port 0 picks a free port.
	Listen string `toml:"listen"`
	// DataDir holds every file the node writes.
	DataDir string `toml:"data_dir"`
	// Hostname is the public DNS name of this node; "localhost" for a laptop.
	Hostname string `toml:"hostname"`
	// AdminPassword enables the admin API (HTTP basic auth as "admin"); empty disables it.
	AdminPassword Secret `toml:"admin_password"`

	Log      LogConfig        `toml:"log"`
	HTTP     HTTPConfig       `toml:"http"`
	DB       DBConfig         `toml:"db"`
	Accounts AccountsConfig   `toml:"accounts"`
	Email    EmailConfig      `toml:"email"`
	PLC      PLCConfig        `toml:"plc"`
	Net      NetConfig        `toml:"net"`
	Repo     repo.StoreConfig `toml:"repo"`
	Relay    relay.Config     `toml:"relay"`
	Blobs    blobs.Config     `toml:"blobs"`
	AppView  appview.Config   `toml:"appview"`
}

// PLCConfig chooses the PLC directory that holds accounts' did:plc identities.
type PLCConfig struct {
	// URL is the directory to use. Empty means the embedded directory on localhost and
	// https://plc.directory for a public hostname.
	URL string `toml:"url"`
	// Listen is where the embedded directory serves the PLC HTTP API for other local nodes
	// and tools; empty serves it to this node only. Ignored when URL names another directory.
	Listen string `toml:"listen"`
}

// NetConfig governs the node's outbound requests.
type NetConfig struct {
	// AllowPrivateNetwork lets outbound requests (PLC, DID documents, other hosts) reach
	// loopback and private addresses. Off in production so that a hostile DID document
	// cannot aim the node at its own network; test networks on one machine turn it on.
	AllowPrivateNetwork bool `toml:"allow_private_network"`
}

// EmailConfig is how the node sends account email (confirmations, password resets).
type EmailConfig struct {
	// SMTPURL is smtp://user:password@host:port (port 587 when absent, with STARTTLS when
	// the server offers it). Empty: tokens are written to the log for the operator.
	SMTPURL Secret `toml:"smtp_url"`
	// From is the sender address.
	From string `toml:"from"`
}

// AccountsConfig says who may sign up and what describeServer advertises.
type AccountsConfig struct {
	// InviteRequired is "auto" (required when the hostname is public, not on localhost),
	// "yes" or "no".
	InviteRequired string `toml:"invite_required"`
	// UserDomains are the handle suffixes offered at sign-up, each starting with a dot.
	// Empty means ".test" on localhost and ".<hostname>" otherwise.
	UserDomains []string `toml:"user_domains"`
	// ContactEmail, PrivacyPolicyURL and TermsOfServiceURL are shown to clients.
	ContactEmail      string `toml:"contact_email"`
	PrivacyPolicyURL  string `toml:"privacy_policy_url"`
	TermsOfServiceURL string `toml:"terms_of_service_url"`
}

// LogConfig chooses how the node logs.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `toml:"level"`
	// Format is json (for machines) or text (for people).
	Format string `toml:"format"`
}

// HTTPConfig bounds the HTTP server.
type HTTPConfig struct {
	// MaxBody caps JSON request bodies; larger ones get 413 PayloadTooLarge.
	MaxBody Size `toml:"max_body"`
	// ShutdownTimeout is how long in-flight requests get to finish on shutdown.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// TrustForwardedFor takes the client address from the last X-Forwarded-For entry, for
	// rate limits behind a reverse proxy. Never enable it without one.
	TrustForwardedFor bool `toml:"trust_forwarded_for"`
}

// DBConfig applies to every SQLite file the node opens.
type DBConfig struct {
	// Synchronous is SQLite's durability level: off, normal or full. With WAL, normal loses
	// nothing on a process crash and at most the last commits on power loss.
	Synchronous string `toml:"synchronous"`
}

// DefaultConfig returns a configuration that is valid on its own: loopback, data under
// ./data, hostname localhost.
func DefaultConfig() Config {
	return Config{
		Listen:   "127.0.0.1:2583",
		DataDir:  "./data",
		Hostname: "localhost",
		Log:      LogConfig{Level: "info", Format: "json"},
		HTTP: HTTPConfig{
			MaxBody:         2 << 20,
			ShutdownTimeout: Duration(10 * time.Second),
		},
		DB:       DBConfig{Synchronous: "normal"},
		Accounts: AccountsConfig{InviteRequired: "auto", UserDomains: []string{}},
		Email:    EmailConfig{From: "noreply@localhost"},
		PLC:      PLCConfig{Listen: "127.0.0.1:2582"},
		Relay:    relay.DefaultConfig(),
		Blobs:    blobs.DefaultConfig(),
		AppView:  appview.DefaultConfig(),
		Repo:     repo.StoreConfig{MaxOpen: repo.DefaultMaxOpen, NodeCache: repo.DefaultNodeCache},
	}
}

// LoadConfig returns DefaultConfig overlaid with the TOML file at path (when path is not
// empty) and then with AERIE_* variables from environ. Unknown keys in the file are an
// error naming the key. The result is not validated: call Validate.
func LoadConfig(path string, environ []string) (Config, error) {
	cfg := DefaultConfig()
	if path != "" {
		md, err := toml.DecodeFile(path, &cfg)
		if err != nil {
			return cfg, fmt.Errorf("read config %s: %w", path, err)
		}
		if undecoded := md.Undecoded(); len(undecoded) > 0 {
			keys := make([]string, len(undecoded))
			for i, k := range undecoded {
				keys[i] = k.String()
			}
			return cfg, fmt.Errorf("read config %s: unknown key %s", path, strings.Join(keys, ", "))
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// configKeys lists every dotted TOML key of Config, in field order.
func configKeys() []string {
	var keys []string
	cfg := DefaultConfig()
	walkConfig(reflect.ValueOf(&cfg).Elem(), "", func(key string, _ reflect.Value) {
		keys = append(keys, key)
	})
	return keys
}

func envName(key string) string {
	return "AERIE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// walkConfig calls fn for every leaf field with its dotted TOML key.
func walkConfig(v reflect.Value, prefix string, fn func(key string, field reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("toml")
		if key == "" || key == "-" {
			continue
		}
		if prefix != "" {
			key = prefix + "." + key
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && !isTextValue(fv) {
			walkConfig(fv, key, fn)
			continue
		}
		fn(key, fv)
	}
}

func isTextValue(v reflect.Value) bool {
	_, ok := v.Addr().Interface().(interface{ UnmarshalText([]byte) error })
	return ok
}

func applyEnv(cfg *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "AERIE_") {
			env[k] = v
		}
	}
	var errs []error
	walkConfig(reflect.ValueOf(cfg).Elem(), "", func(key string, fv reflect.Value) {
		name := envName(key)
		val, ok := env[name]
		if !ok || val == "" {
			return
		}
		if err := setField(fv, val); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}

func setField(fv reflect.Value, val string) error {
	if u, ok := fv.Addr().Interface().(interface{ UnmarshalText([]byte) error }); ok {
		return u.UnmarshalText([]byte(val))
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(val)
	case reflect.Bool:
		switch strings.ToLower(val) {
		case "1", "true", "yes", "on":
			fv.SetBool(true)
		case "0", "false", "no", "off":
			fv.SetBool(false)
		default:
			return fmt.Errorf("%q is not a boolean", val)
		}
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported config type %s", fv.Type())
		}
		var items []string
		for item := range strings.SplitSeq(val, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		fv.Set(reflect.ValueOf(items).Convert(fv.Type()))
	case reflect.Int64:
		if fv.Type() == reflect.TypeFor[time.Duration]() {
			d, err := time.ParseDuration(val)
			if err != nil {
				return fmt.Errorf("%q is not a duration like 30s or 72h", val)
			}
			fv.SetInt(int64(d))
			return nil
		}
		fallthrough
	case reflect.Int:
		var n int64
		if _, err := fmt.Sscan(val, &n); err != nil {
			return fmt.Errorf("%q is not an integer", val)
		}
		fv.SetInt(n)
	default:
		return fmt.Errorf("unsupported config type %s", fv.Type())
	}
	return nil
}

// Validate reports every problem at once, each naming its key. It does not change cfg.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		bad("listen", "want host:port, got %q", c.Listen)
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.Hostname != "localhost" {
		if _, err := syntax.ParseHandle(c.Hostname); err != nil {
			bad("hostname", "%q is not a valid DNS hostname", c.Hostname)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "want json or text, got %q", c.Log.Format)
	}
	if c.HTTP.MaxBody < 1<<10 {
		bad("http.max_body", "must be at least 1KB, got %s", c.HTTP.MaxBody)
	}
	if c.HTTP.ShutdownTimeout <= 0 {
		bad("http.shutdown_timeout", "must be positive, got %s", c.HTTP.ShutdownTimeout)
	}
	switch strings.ToUpper(c.DB.Synchronous) {
	case sqlite.SyncOff, sqlite.SyncNormal, sqlite.SyncFull, sqlite.SyncExtra:
	default:
		bad("db.synchronous", "want off, normal, full or extra, got %q", c.DB.Synchronous)
	}
	switch c.Accounts.InviteRequired {
	case "auto", "yes", "no":
	default:
		bad("accounts.invite_required", "want auto, yes or no, got %q", c.Accounts.InviteRequired)
	}
	for _, d := range c.Accounts.UserDomains {
		if _, err := syntax.ParseHandle("x" + d); err != nil || !strings.HasPrefix(d, ".") {
			bad("accounts.user_domains", "%q must be a domain starting with a dot, like .example.com", d)
		}
	}
	if c.Repo.MaxOpen < 1 {
		bad("repo.max_open", "must be at least 1, got %d", c.Repo.MaxOpen)
	}
	if c.Repo.NodeCache < 0 {
		bad("repo.node_cache", "must not be negative, got %d", c.Repo.NodeCache)
	}
	if err := c.Relay.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Blobs.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.AppView.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.PLC.URL != "" {
		if u, err := url.Parse(c.PLC.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("plc.url", "want an http(s) URL like https://plc.directory, got %q", c.PLC.URL)
		}
	}
	if c.PLC.Listen != "" {
		if _, _, err := net.SplitHostPort(c.PLC.Listen); err != nil {
			bad("plc.listen", "want host:port, got %q", c.PLC.Listen)
		}
	}
	return errors.Join(errs...)
}

// EmbeddedPLC reports whether the node runs its own PLC directory.
func (c Config) EmbeddedPLC() bool { return c.PLC.URL == "" && c.IsLocal() }

// PLCURL is the directory other software should use for this node's DIDs: the configured
// one, https://plc.directory by default on a public host, or the embedded listener.
func (c Config) PLCURL() string {
	switch {
	case c.PLC.URL != "":
		return strings.TrimSuffix(c.PLC.URL, "/")
	case !c.IsLocal():
		return "https://plc.directory"
	case c.PLC.Listen != "":
		return "http://" + c.PLC.Listen
	}
	return ""
}

// InvitesRequired reports whether createAccount needs an invite code.
func (c Config) InvitesRequired() bool {
	switch c.Accounts.InviteRequired {
	case "yes":
		return true
	case "no":
		return false
	}
	return !c.IsLocal()
}

// UserDomains returns the handle suffixes accounts may sign up under.
func (c Config) UserDomains() []string {
	if len(c.Accounts.UserDomains) > 0 {
		return c.Accounts.UserDomains
	}
	if c.IsLocal() {
		// .localhost is not a valid handle TLD; .test is reserved for exactly this.
		return []string{".test"}
	}
	return []string{"." + c.Hostname}
}

// IsLocal reports whether the node runs as a development node on localhost.
func (c Config) IsLocal() bool { return c.Hostname == "localhost" }
