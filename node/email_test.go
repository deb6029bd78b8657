package node

import (
	"bytes"
	"database/sql"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func emailToken(t *testing.T, n *Node, purpose, did string) string {
	t.Helper()
	var tok string
	err := n.db.Read(t.Context(), func(tx *sql.Tx) error {
		return tx.QueryRowContext(t.Context(), "SELECT token FROM email_token WHERE purpose = ? AND did = ?", purpose, did).Scan(&tok)
	})
	if err != nil {
		t.Fatalf("read %s token for %s: %v", purpose, did, err)
	}
	return tok
}

func TestEmailConfirmationAndUpdate(t *testing.T) {
	t.Parallel()
	n, base, clock := testNodeClock(t)
	seedAccount(t, n, "did:plc:fay", "fay.test", "fay@example.com", "pw-fay-123")
	access := login(t, base, "fay.test", "pw-fay-123")["accessJwt"].(string)

	call := func(nsid, body string) (int, map[string]any) {
		status, out, _ := getJSON(t, "POST", base+"/xrpc/"+nsid, body, bearer(access))
		return status, out
	}
	if status, out := call("com.atproto.server.requestEmailConfirmation", ""); status != 200 {
		t.Fatalf("requestEmailConfirmation = %d %v", status, out)
	}
	tok := emailToken(t, n, purposeConfirmEmail, "did:plc:fay")
	if status, out := call("com.atproto.server.confirmEmail", `{"email":"fay@example.com","token":"WRONG-TOKEN"}`); status != 400 || out["error"] != "InvalidToken" {
		t.Errorf("confirmEmail with a wrong token = %d %v", status, out)
	}
	if status, out := call("com.atproto.server.confirmEmail", `{"email":"fay@example.com","token":"`+strings.ToLower(tok)+`"}`); status != 200 {
		t.Fatalf("confirmEmail = %d %v", status, out)
	}
	_, sess, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.getSession", "", bearer(access))
	if sess["emailConfirmed"] != true {
		t.Errorf("getSession after confirmEmail: emailConfirmed = %v", sess["emailConfirmed"])
	}

	// A confirmed email needs a token to change, and the token expires.
	status, out := call("com.atproto.server.requestEmailUpdate", "")
	if status != 200 || out["tokenRequired"] != true {
		t.Fatalf("requestEmailUpdate = %d %v", status, out)
	}
	if status, out := call("com.atproto.server.updateEmail", `{"email":"new@example.com"}`); status != 400 || out["error"] != "TokenRequired" {
		t.Errorf("updateEmail without token = %d %v", status, out)
	}
	tok = emailToken(t, n, purposeUpdateEmail, "did:plc:fay")
	clock.Advance(emailTokenTTL + time.Minute)
	if status, out := call("com.atproto.server.updateEmail", `{"email":"new@example.com","token":"`+tok+`"}`); status != 400 || out["error"] != "ExpiredToken" {
		t.Errorf("updateEmail with an expired token = %d %v", status, out)
	}
	call("com.atproto.server.requestEmailUpdate", "")
	tok = emailToken(t, n, purposeUpdateEmail, "did:plc:fay")
	if status, out := call("com.atproto.server.updateEmail", `{"email":"New@Example.com","token":"`+tok+`"}`); status != 200 {
		t.Fatalf("updateEmail = %d %v", status, out)
	}
	_, sess, _ = getJSON(t, "GET", base+"/xrpc/com.atproto.server.getSession", "", bearer(access))
	if sess["email"] != "new@example.com" || sess["emailConfirmed"] != false {
		t.Errorf("getSession after updateEmail = %v", sess)
	}
}

func TestPasswordReset(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	seedAccount(t, n, "did:plc:gus", "gus.test", "gus@example.com", "old-password")
	refresh := login(t, base, "gus.test", "old-password")["refreshJwt"].(string)
	h := map[string]string{"Content-Type": "application/json"}

	// Unknown addresses get the same answer.
	for _, email := range []string{"gus@example.com", "nobody@example.com"} {
		if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.requestPasswordReset", `{"email":"`+email+`"}`, h); status != 200 {
			t.Errorf("requestPasswordReset(%s) = %d, want 200", email, status)
		}
	}
	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.requestPasswordReset", `{"email":"not an email"}`, h); status != 400 || out["error"] != "InvalidEmail" {
		t.Errorf("requestPasswordReset(garbage) = %d %v", status, out)
	}
	tok := emailToken(t, n, purposeResetPassword, "did:plc:gus")
	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.resetPassword", `{"token":"`+tok+`","password":"short"}`, h); status != 400 || out["error"] != "InvalidPassword" {
		t.Errorf("resetPassword with a short password = %d %v", status, out)
	}
	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.resetPassword", `{"token":"`+tok+`","password":"new-password"}`, h); status != 200 {
		t.Fatalf("resetPassword = %d %v", status, out)
	}
	login(t, base, "gus.test", "new-password")
	if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(refresh)); status != 401 {
		t.Errorf("old session after a reset = %d, want 401", status)
	}
	if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.resetPassword", `{"token":"`+tok+`","password":"another-one"}`, h); status != 400 {
		t.Errorf("reusing a reset token = %d, want 400", status)
	}
}

func TestMailerLogsWithoutSMTP(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	m := &mailer{cfg: EmailConfig{From: "a@b.c"}, log: slog.New(slog.NewTextHandler(&buf, nil))}
	if err := m.send(t.Context(), "x@example.com", "Subject", "code ABCDE-FGHIJ"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "ABCDE-FGHIJ") || !strings.Contains(buf.String(), "no SMTP") {
		t.Errorf("log = %q, want the code and a no-SMTP note", buf.String())
	}
}
