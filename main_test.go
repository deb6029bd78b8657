package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aerie-social/aerie/node"
)

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), args, nil, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		wantUsage bool
		wantErr   bool
		wantOut   string
	}{
		{"version", []string{"version"}, false, false, "aerie "},
		{"help", []string{"--help"}, false, false, "Usage:"},
		{"serve help", []string{"serve", "--help"}, false, false, "-data-dir"},
		{"init help", []string{"init", "-h"}, false, false, "-hostname"},
		{"config help", []string{"config", "--help"}, false, false, "config check"},
		{"unknown command", []string{"frobnicate"}, true, true, ""},
		{"unknown flag", []string{"serve", "--nope"}, true, true, ""},
		{"stray argument", []string{"serve", "extra"}, true, true, ""},
		{"config without subcommand", []string{"config"}, true, true, ""},
		{"config check defaults", []string{"config", "check"}, false, false, "defaults: ok"},
		{"config check example", []string{"config", "check", "config.example.toml"}, false, false, "config.example.toml: ok"},
		{"config check missing file", []string{"config", "check", "/nonexistent.toml"}, false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := runCmd(t, tt.args...)
			var usage usageError
			if (err != nil) != tt.wantErr || errors.As(err, &usage) != tt.wantUsage {
				t.Errorf("run(%q) = %v; want error %v, usage error %v", tt.args, err, tt.wantErr, tt.wantUsage)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tt.args, out, tt.wantOut)
			}
		})
	}
}

func TestConfigCheckReportsBadKeyInOneLine(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(file, []byte("[log]\nlevel = \"chatty\"\nformat = \"xml\"\n"), 0o600)
	_, _, err := runCmd(t, "config", "check", file)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "log.level") || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("config check of a bad file = %q, want one line naming log.level and log.format", err)
	}
	os.WriteFile(file, []byte("lisen = \"x\"\n"), 0o600)
	if _, _, err := runCmd(t, "config", "check", file); err == nil || !strings.Contains(err.Error(), "unknown key lisen") {
		t.Errorf("config check with an unknown key = %v, want it named", err)
	}
}

func TestInitWritesAValidConfigOnce(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "aerie.toml")
	if _, _, err := runCmd(t, "init", "--config", file, "--hostname", "pds.example.com"); err != nil {
		t.Fatalf("init = %v", err)
	}
	info, err := os.Stat(file)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("init wrote %v, %v; want mode 0600", info, err)
	}
	cfg, err := node.LoadConfig(file, nil)
	if err != nil {
		t.Fatalf("LoadConfig(init output) = %v", err)
	}
	if cfg.Hostname != "pds.example.com" || len(cfg.AdminPassword.Reveal()) < 20 {
		t.Errorf("init config: hostname %q, admin password of %d chars", cfg.Hostname, len(cfg.AdminPassword.Reveal()))
	}
	before, _ := os.ReadFile(file)
	if _, _, err := runCmd(t, "init", "--config", file); err == nil {
		t.Error("second init over the same file succeeded")
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("second init changed the existing file")
	}
	other := filepath.Join(t.TempDir(), "other.toml")
	runCmd(t, "init", "--config", other)
	cfg2, _ := node.LoadConfig(other, nil)
	if cfg2.AdminPassword == cfg.AdminPassword {
		t.Error("two inits generated the same admin password")
	}
}

func TestServeStartsAndStops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	dir := t.TempDir()
	go func() {
		env := []string{"AERIE_DATA_DIR=" + dir, "AERIE_LISTEN=127.0.0.1:0", "AERIE_PLC_LISTEN=127.0.0.1:0"}
		done <- run(ctx, nil, env, io.Discard, pw)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() {
		t.Fatalf("no log line from serve: %v", <-done)
	}
	var first struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if err := json.Unmarshal(lines.Bytes(), &first); err != nil || first.Msg != "listening" || strings.HasSuffix(first.Addr, ":0") {
		t.Fatalf("first log line = %s, want a listening line with the real address", lines.Bytes())
	}
	go io.Copy(io.Discard, pr)
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + first.Addr + "/xrpc/_health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /xrpc/_health = %v, %v", resp, err)
	}
	resp.Body.Close()
	if _, err := os.Stat(filepath.Join(dir, "aerie.sqlite")); err != nil {
		t.Errorf("data dir has no aerie.sqlite: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after cancel = %v, want nil", err)
	}
}
