// Command aerie runs a complete, self-hosted AT Protocol node: a Personal Data Server, a
// relay, an AppView-style index, a blob server and a web UI, in one process.
package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/aerie-social/aerie/node"
)

// version is stamped by the Makefile with -X main.version.
var version = "dev"

//go:embed config.example.toml
var exampleConfig string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default handlers so a second one exits at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	var usage usageError
	switch {
	case err == nil:
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "aerie:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "aerie:", err)
		os.Exit(1)
	}
}

// usageError marks a mistake in the command line, which exits with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const mainUsage = `Aerie is a complete AT Protocol (Bluesky) node in one binary.

Usage:
  aerie [serve] [flags]     run the node (the default command)
  aerie init [flags]        write a commented config file with fresh secrets
  aerie config check [F]    check a config file (and AERIE_* variables) without starting
  aerie account ...         create, list, deactivate, activate, delete accounts, reset passwords
  aerie invite create       make an invite code
  aerie blobs gc            delete expired uploads and cache entries now
  aerie reindex             rebuild the AppView index of local accounts from their repos
  aerie backfill ACCOUNT    follow an account on another server and fetch its repo now
  aerie version             print the version

Run 'aerie COMMAND --help' for a command's flags. Every config key can also be set by an
environment variable AERIE_<SECTION>_<KEY>; see config.example.toml.
`

// run is the whole program behind main: it parses args, runs one command and returns its
// error, so tests can drive it without a process.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && !isHelp(args[0]) {
		return cmdServe(ctx, args, environ, stdout, stderr)
	}
	switch args[0] {
	case "serve":
		return cmdServe(ctx, args[1:], environ, stdout, stderr)
	case "init":
		return cmdInit(args[1:], stdout, stderr)
	case "config":
		if len(args) < 2 || isHelp(args[1]) {
			fmt.Fprint(stdout, "Usage: aerie config check [FILE]\n\nChecks FILE (or AERIE_CONFIG) together with AERIE_* variables and reports every problem.\n")
			if len(args) < 2 {
				return usagef("config: missing subcommand (want: check)")
			}
			return nil
		}
		if args[1] != "check" {
			return usagef("config: unknown subcommand %q (want: check)", args[1])
		}
		return cmdConfigCheck(args[2:], environ, stdout, stderr)
	case "account", "invite", "blobs", "reindex", "backfill":
		return cmdAdmin(ctx, args[0], args[1:], environ, stdout)
	case "version":
		fmt.Fprintln(stdout, "aerie", version)
		return nil
	case "help":
		fmt.Fprint(stdout, mainUsage)
		return nil
	default:
		if isHelp(args[0]) {
			fmt.Fprint(stdout, mainUsage)
			return nil
		}
		return usagef("unknown command %q; run 'aerie --help'", args[0])
	}
}

func isHelp(arg string) bool { return arg == "-h" || arg == "--help" || arg == "-help" }

// parseFlags parses fs, printing help to stdout on -h (and returning errHelpShown) and
// turning any other flag error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return errHelpShown
	}
	if err != nil {
		return usagef("%s: %v", fs.Name(), err)
	}
	if fs.NArg() > 0 && fs.Name() != "config check" {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// errHelpShown ends a command that printed its help successfully.
var errHelpShown = errors.New("help shown")

func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

func cmdServe(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "Usage: aerie serve [flags]\n\nRuns the node until SIGINT or SIGTERM (a second signal exits at once).\n\nFlags:\n")
	configPath := fs.String("config", lookupEnv(environ, "AERIE_CONFIG"), "config file (TOML); env AERIE_CONFIG")
	listen := fs.String("listen", "", "main HTTP address, overrides listen / AERIE_LISTEN")
	dataDir := fs.String("data-dir", "", "data directory, overrides data_dir / AERIE_DATA_DIR")
	hostname := fs.String("hostname", "", "public hostname, overrides hostname / AERIE_HOSTNAME")
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpIsSuccess(err)
	}
	cfg, err := node.LoadConfig(*configPath, environ)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *hostname != "" {
		cfg.Hostname = *hostname
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config: %s", oneLine(err))
	}
	log := newLogger(cfg.Log, stderr)
	n, err := node.New(ctx, cfg, version, log)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

func helpIsSuccess(err error) error {
	if errors.Is(err, errHelpShown) {
		return nil
	}
	return err
}

func cmdInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", "Usage: aerie init [flags]\n\nWrites a commented config file with a freshly generated admin password.\nIt refuses to overwrite an existing file.\n\nFlags:\n")
	out := fs.String("config", "aerie.toml", "file to write")
	hostname := fs.String("hostname", "", "public hostname to put in the file (default: localhost)")
	dataDir := fs.String("data-dir", "", "data directory to put in the file (default: ./data)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpIsSuccess(err)
	}
	text, err := initialConfig(*hostname, *dataDir)
	if err != nil {
		return err
	}
	// O_EXCL: never overwrite someone's config (and its secrets) by accident.
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists; not overwriting it", *out)
	}
	if err != nil {
		return fmt.Errorf("create config: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(*out)
		return fmt.Errorf("write config: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(*out)
		return fmt.Errorf("write config: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s (mode 0600; it holds the admin password)\nstart the node with: aerie serve --config %s\n", *out, *out)
	return nil
}

// initialConfig is the example config with a fresh admin password and the given settings.
func initialConfig(hostname, dataDir string) (string, error) {
	var secret [24]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", fmt.Errorf("generate admin password: %w", err)
	}
	text := exampleConfig
	set := func(key, value string) error {
		old := key + " = " + quoteTOML(defaultValue(key))
		if !strings.Contains(text, "\n"+old+"\n") {
			return fmt.Errorf("config template has no line %q", old)
		}
		text = strings.Replace(text, "\n"+old+"\n", "\n"+key+" = "+quoteTOML(value)+"\n", 1)
		return nil
	}
	if err := set("admin_password", base64.RawURLEncoding.EncodeToString(secret[:])); err != nil {
		return "", err
	}
	if hostname != "" {
		if err := set("hostname", hostname); err != nil {
			return "", err
		}
	}
	if dataDir != "" {
		if err := set("data_dir", dataDir); err != nil {
			return "", err
		}
	}
	return text, nil
}

func defaultValue(key string) string {
	d := node.DefaultConfig()
	switch key {
	case "hostname":
		return d.Hostname
	case "data_dir":
		return d.DataDir
	}
	return ""
}

func quoteTOML(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func cmdConfigCheck(args, environ []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config check", "Usage: aerie config check [FILE]\n\nChecks FILE (default: AERIE_CONFIG) together with AERIE_* variables and reports every problem.\n")
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpIsSuccess(err)
	}
	path := lookupEnv(environ, "AERIE_CONFIG")
	if fs.NArg() > 1 {
		return usagef("config check: takes at most one file")
	}
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	}
	cfg, err := node.LoadConfig(path, environ)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config: %s", oneLine(err))
	}
	if path == "" {
		path = "defaults"
	}
	fmt.Fprintf(stdout, "%s: ok (listen %s, data_dir %s, hostname %s)\n", path, cfg.Listen, cfg.DataDir, cfg.Hostname)
	return nil
}

// cmdAdmin runs the account and invite commands, which talk to the running node.
func cmdAdmin(ctx context.Context, group string, args, environ []string, stdout io.Writer) error {
	configPath := lookupEnv(environ, "AERIE_CONFIG")
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case isHelp(a):
			fmt.Fprint(stdout, node.AdminUsage)
			return nil
		case a == "--config" || a == "-config":
			if i+1 == len(args) {
				return usagef("%s: --config needs a file", group)
			}
			configPath = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			configPath = strings.TrimPrefix(a, "--config=")
		default:
			rest = append(rest, a)
		}
	}
	cfg, err := node.LoadConfig(configPath, environ)
	if err != nil {
		return err
	}
	err = node.RunAdminCommand(ctx, cfg, group, rest, stdout)
	var usage node.UsageError
	if errors.As(err, &usage) {
		return usageError{usage.Msg}
	}
	return err
}

// oneLine joins the problems of an errors.Join into one line for the terminal.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

func newLogger(cfg node.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Level)) // Validate accepted it
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
