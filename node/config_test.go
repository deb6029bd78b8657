package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
)

func TestExampleConfigIsTheDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(filepath.Join("..", "config.example.toml"), nil)
	if err != nil {
		t.Fatalf("LoadConfig(config.example.toml) = %v", err)
	}
	if diff := cmp.Diff(DefaultConfig(), cfg); diff != "" {
		t.Errorf("config.example.toml differs from DefaultConfig() (-default +example):\n%s", diff)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

func TestEveryKeyIsDocumentedAndHasAnEnvOverride(t *testing.T) {
	t.Parallel()
	var example map[string]any
	if _, err := toml.DecodeFile(filepath.Join("..", "config.example.toml"), &example); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	keys := configKeys()
	if len(keys) == 0 {
		t.Fatal("configKeys() is empty")
	}
	for _, key := range keys {
		env := envName(key)
		if !strings.Contains(string(readme), env) {
			t.Errorf("README.md does not mention %s", env)
		}
		var node any = example
		for part := range strings.SplitSeq(key, ".") {
			m, _ := node.(map[string]any)
			node = m[part]
		}
		if node == nil {
			t.Errorf("config.example.toml has no entry for %s", key)
		}
		// The override really reaches the field: set it to the example's own value.
		if _, err := LoadConfig("", []string{env + "=" + fmt.Sprint(node)}); err != nil {
			t.Errorf("LoadConfig with %s=%v = %v", env, node, err)
		}
	}
}

func TestEnvOverridesFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(file, []byte("listen = \"127.0.0.1:1111\"\n[log]\nlevel = \"debug\"\n"), 0o600)
	cfg, err := LoadConfig(file, []string{
		"AERIE_LISTEN=127.0.0.1:2222",
		"AERIE_DATA_DIR=", // empty: unset
		"AERIE_HTTP_MAX_BODY=5MB",
		"AERIE_HTTP_SHUTDOWN_TIMEOUT=3s",
		"AERIE_ADMIN_PASSWORD=hunter2",
		"PATH=/bin",
	})
	if err != nil {
		t.Fatalf("LoadConfig = %v", err)
	}
	want := DefaultConfig()
	want.Listen = "127.0.0.1:2222"
	want.Log.Level = "debug"
	want.HTTP.MaxBody = 5 << 20
	want.HTTP.ShutdownTimeout = Duration(3 * time.Second)
	want.AdminPassword = "hunter2"
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("LoadConfig with env (-want +got):\n%s", diff)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string
		env     []string
		wantErr string
	}{
		{"unknown key", "listn = \"x\"\n", nil, "unknown key listn"},
		{"unknown section key", "[log]\nlevle = \"x\"\n", nil, "unknown key log.levle"},
		{"wrong type", "listen = 5\n", nil, "listen"},
		{"bad duration", "[http]\nshutdown_timeout = \"soon\"\n", nil, "not a duration"},
		{"bad size env", "", []string{"AERIE_HTTP_MAX_BODY=lots"}, "AERIE_HTTP_MAX_BODY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "c.toml")
			os.WriteFile(file, []byte(tt.file), 0o600)
			_, err := LoadConfig(file, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadConfig(%q, %v) = %v, want error containing %q", tt.file, tt.env, err, tt.wantErr)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Listen = "nope"
	cfg.Hostname = "not a host"
	cfg.Log.Level = "loud"
	cfg.DB.Synchronous = "sometimes"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil for a config with four problems")
	}
	for _, key := range []string{"listen:", "hostname:", "log.level:", "db.synchronous:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("Validate() = %q, does not name %s", err, key)
		}
	}
}

func TestSizeAndSecretText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"2MB", 2 << 20, true}, {"512kb", 512 << 10, true}, {"1GB", 1 << 30, true}, {"100B", 100, true},
		{"10", 0, false}, {"-1MB", 0, false}, {"MB", 0, false}, {"99999999999GB", 0, false},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalText([]byte(tt.in))
		if (err == nil) != tt.ok || s != tt.want {
			t.Errorf("Size.UnmarshalText(%q) = %d, %v; want %d, ok=%v", tt.in, s, err, tt.want, tt.ok)
		}
		if tt.ok && s.String() == "" {
			t.Errorf("Size(%d).String() is empty", s)
		}
	}
	if got := Secret("hunter2").String(); strings.Contains(got, "hunter2") {
		t.Errorf("Secret.String() = %q, leaks the value", got)
	}
}
