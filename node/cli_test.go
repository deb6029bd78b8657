package node

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestAdminCommands(t *testing.T) {
	t.Parallel()
	n, base := testNode(t, func(c *Config) { c.Accounts.InviteRequired = "yes" })
	cfg := n.cfg
	cfg.Listen = n.Addr().String()
	run := func(group string, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := RunAdminCommand(t.Context(), cfg, group, args, &out); err != nil {
			t.Fatalf("aerie %s %s = %v", group, strings.Join(args, " "), err)
		}
		return out.String()
	}

	// The admin creates accounts without an invite, even when invites are required.
	out := run("account", "create", "--handle", "cli.test", "--email", "cli@example.com")
	if !strings.Contains(out, "created cli.test (did:plc:") || !strings.Contains(out, "password: ") {
		t.Fatalf("account create printed %q", out)
	}
	password := strings.TrimSpace(out[strings.Index(out, "password: ")+len("password: "):])
	login(t, base, "cli.test", password)

	if out := run("account", "list"); !strings.Contains(out, "cli.test") || !strings.Contains(out, "active") {
		t.Errorf("account list printed %q", out)
	}
	run("account", "deactivate", "cli.test")
	if out := run("account", "list"); !strings.Contains(out, "deactivated") {
		t.Errorf("account list after deactivate printed %q", out)
	}
	run("account", "activate", "cli.test")
	out = run("account", "reset-password", "cli.test", "--password", "brand-new-password")
	if !strings.Contains(out, "signed out") {
		t.Errorf("reset-password printed %q", out)
	}
	login(t, base, "cli.test", "brand-new-password")

	code := strings.TrimSpace(run("invite", "create", "--uses", "2"))
	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAccount",
		`{"handle":"invited.test","password":"invited-password","inviteCode":"`+code+`"}`, map[string]string{"Content-Type": "application/json"})
	if status != 200 {
		t.Errorf("createAccount with the CLI's invite code = %d %v", status, body)
	}
	status, body, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAccount",
		`{"handle":"uninvited.test","password":"uninvited-password"}`, map[string]string{"Content-Type": "application/json"})
	if status != 400 || body["error"] != "InvalidInviteCode" {
		t.Errorf("createAccount without invite = %d %v, want 400 InvalidInviteCode", status, body)
	}

	if out := run("reindex"); !strings.Contains(out, "done: 2 accounts reindexed, 0 failed") || !strings.Contains(out, "[1/2]") {
		t.Errorf("reindex printed %q", out)
	}

	run("account", "delete", "cli.test")
	if out := run("account", "list"); strings.Contains(out, "cli.test") {
		t.Errorf("account list after delete printed %q", out)
	}

	var usage UsageError
	if err := RunAdminCommand(t.Context(), cfg, "account", []string{"frobnicate"}, &bytes.Buffer{}); !errors.As(err, &usage) {
		t.Errorf("unknown subcommand = %v, want a UsageError", err)
	}
	cfg.AdminPassword = "wrong"
	if err := RunAdminCommand(t.Context(), cfg, "account", []string{"list"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "AuthenticationRequired") {
		t.Errorf("account list with a wrong admin password = %v", err)
	}
}
