package identity

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/google/go-cmp/cmp"
)

// testClock is a clock tests move by hand, for the recovery window.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// plcFixture is an embedded directory in a temp dir, served by a real HTTP server.
type plcFixture struct {
	dir    *Directory
	srv    *httptest.Server
	client *PLCClient
	clock  *testClock
}

func newPLCFixture(t *testing.T) *plcFixture {
	t.Helper()
	clock := &testClock{now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	dir, err := OpenDirectory(t.Context(), filepath.Join(t.TempDir(), "plc.sqlite"), slog.New(slog.DiscardHandler), DirectoryOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("OpenDirectory() = %v", err)
	}
	t.Cleanup(func() { dir.Close() })
	srv := httptest.NewServer(dir.Handler())
	t.Cleanup(srv.Close)
	return &plcFixture{dir: dir, srv: srv, client: NewPLCClient(srv.URL, NewHTTPClient(true, 0)), clock: clock}
}

// account is a DID created through the fixture, with its keys.
type account struct {
	did      syntax.DID
	state    State
	server   atcrypto.PrivateKey // lower-priority rotation key (the PDS's)
	recovery atcrypto.PrivateKey // higher-priority rotation key (the user's)
	signing  atcrypto.PrivateKey
	genesis  *Operation
}

func (f *plcFixture) createAccount(t *testing.T, handle string) *account {
	t.Helper()
	a := &account{server: newK256(t), recovery: newP256(t), signing: newK256(t)}
	a.state = AccountState(syntax.Handle(handle), "https://pds.example.com", pub(t, a.signing), pub(t, a.recovery), pub(t, a.server))
	op, did, err := NewGenesis(a.state, a.server)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.client.Submit(t.Context(), did, op); err != nil {
		t.Fatalf("Submit(genesis) = %v", err)
	}
	a.did, a.genesis = did, op
	a.state.DID = did
	return a
}

func (f *plcFixture) lastCID(t *testing.T, did syntax.DID) string {
	t.Helper()
	op, err := f.client.LastOp(t.Context(), did)
	if err != nil {
		t.Fatalf("LastOp(%s) = %v", did, err)
	}
	c, err := op.CID()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDirectoryServesDocumentDataAndLogs(t *testing.T) {
	t.Parallel()
	f := newPLCFixture(t)
	ctx := t.Context()
	a := f.createAccount(t, "alice.example.com")

	raw, err := f.client.Document(ctx, a.did)
	if err != nil {
		t.Fatalf("Document() = %v", err)
	}
	var doc Document
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	want := Document{
		Context:     []string{contextDID, contextMultikey, contextK256Suite},
		ID:          a.did,
		AlsoKnownAs: []string{"at://alice.example.com"},
		VerificationMethod: []VerificationMethod{{
			ID: a.did.String() + "#atproto", Type: "Multikey", Controller: a.did.String(),
			PublicKeyMultibase: pub(t, a.signing).Multibase(),
		}},
		Service: []DocumentService{{ID: "#atproto_pds", Type: "AtprotoPersonalDataServer", ServiceEndpoint: "https://pds.example.com"}},
	}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("Document (-want +got):\n%s", diff)
	}

	resp, err := http.Get(f.srv.URL + "/" + a.did.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/did+ld+json") {
		t.Errorf("GET /<did> Content-Type = %q, want application/did+ld+json", ct)
	}

	data, err := f.client.Data(ctx, a.did)
	if err != nil {
		t.Fatalf("Data() = %v", err)
	}
	if diff := cmp.Diff(a.state, data); diff != "" {
		t.Errorf("Data (-want +got):\n%s", diff)
	}

	// One update, then every log view.
	st := a.state
	st.AlsoKnownAs = []string{"at://alice.example.org"}
	update, err := NewUpdate(f.lastCID(t, a.did), st, a.server)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.client.Submit(ctx, a.did, update); err != nil {
		t.Fatalf("Submit(update) = %v", err)
	}
	var ops []*Operation
	if err := f.client.getJSON(ctx, a.did, "/log", &ops); err != nil {
		t.Fatalf("GET /log = %v", err)
	}
	if len(ops) != 2 || ops[1].Sig != update.Sig {
		t.Errorf("GET /log = %d ops, want genesis and update", len(ops))
	}
	last, err := f.client.LastOp(ctx, a.did)
	if err != nil || last.Sig != update.Sig {
		t.Errorf("LastOp() = %+v, %v; want the update", last, err)
	}
	audit, err := f.client.AuditLog(ctx, a.did)
	if err != nil {
		t.Fatalf("AuditLog() = %v", err)
	}
	if err := VerifyAuditLog(a.did, audit); err != nil {
		t.Errorf("VerifyAuditLog(served audit log) = %v", err)
	}
	if len(audit) != 2 || audit[0].CreatedAt != "2026-06-01T12:00:00.000Z" {
		t.Errorf("audit log = %+v, want 2 entries stamped by the clock", audit)
	}
}

func TestDirectoryRejects(t *testing.T) {
	t.Parallel()
	f := newPLCFixture(t)
	ctx := t.Context()

	t.Run("genesis signed by a key it does not list", func(t *testing.T) {
		server, stranger := newK256(t), newK256(t)
		st := AccountState("bob.example.com", "https://pds.example.com", pub(t, server), pub(t, server))
		op, did, err := NewGenesis(st, stranger)
		if err != nil {
			t.Fatal(err)
		}
		err = f.client.Submit(ctx, did, op)
		if !errors.Is(err, ErrOperationRejected) || !strings.Contains(err.Error(), "signature") {
			t.Errorf("Submit(badly signed genesis) = %v, want a rejected signature", err)
		}
	})

	t.Run("genesis under the wrong DID", func(t *testing.T) {
		server := newK256(t)
		op, _, err := NewGenesis(AccountState("carol.example.com", "https://pds.example.com", pub(t, server), pub(t, server)), server)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.client.Submit(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", op); !errors.Is(err, ErrOperationRejected) {
			t.Errorf("Submit(genesis under another DID) = %v, want rejection", err)
		}
	})

	t.Run("tampered signature", func(t *testing.T) {
		a := f.createAccount(t, "dave.example.com")
		st := a.state
		st.AlsoKnownAs = []string{"at://dave.example.org"}
		op, err := NewUpdate(f.lastCID(t, a.did), st, a.server)
		if err != nil {
			t.Fatal(err)
		}
		op.AlsoKnownAs = []string{"at://mallory.example.com"} // signed bytes no longer match
		if err := f.client.Submit(ctx, a.did, op); !errors.Is(err, ErrOperationRejected) {
			t.Errorf("Submit(tampered update) = %v, want rejection", err)
		}
	})

	t.Run("update by a non-rotation key", func(t *testing.T) {
		a := f.createAccount(t, "erin.example.com")
		op, err := NewUpdate(f.lastCID(t, a.did), a.state, a.signing)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.client.Submit(ctx, a.did, op); !errors.Is(err, ErrOperationRejected) {
			t.Errorf("Submit(update signed by the repo key) = %v, want rejection", err)
		}
		if err := f.dir.Submit(ctx, a.did, op); !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("Directory.Submit(update signed by the repo key) = %v, want ErrInvalidSignature", err)
		}
	})

	t.Run("forked chain", func(t *testing.T) {
		a := f.createAccount(t, "frank.example.com")
		gcid := f.lastCID(t, a.did)
		st := a.state
		st.AlsoKnownAs = []string{"at://frank.example.org"}
		first, _ := NewUpdate(gcid, st, a.server)
		if err := f.client.Submit(ctx, a.did, first); err != nil {
			t.Fatalf("Submit(first update) = %v", err)
		}
		st.AlsoKnownAs = []string{"at://frank.example.net"}
		fork, _ := NewUpdate(gcid, st, a.server) // same prev, same-priority key
		if err := f.dir.Submit(ctx, a.did, fork); !errors.Is(err, ErrForkedChain) {
			t.Errorf("Submit(fork) = %v, want ErrForkedChain", err)
		}
		if err := f.client.Submit(ctx, a.did, first); !errors.Is(err, ErrOperationRejected) {
			t.Errorf("Submit(same op twice) = %v, want rejection", err)
		}
		if err := f.client.Submit(ctx, a.did, a.genesis); !errors.Is(err, ErrOperationRejected) {
			t.Errorf("Submit(second genesis) = %v, want rejection", err)
		}
	})

	t.Run("malformed JSON and bad DIDs", func(t *testing.T) {
		tests := []struct {
			name, path, body string
			status           int
		}{
			{"not json", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", `{`, http.StatusBadRequest},
			{"unknown field", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", `{"type":"plc_tombstone","prev":null,"sig":"","x":1}`, http.StatusBadRequest},
			{"not a plc DID", "/did:web:example.com", `{}`, http.StatusBadRequest},
			{"too large", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", strings.Repeat(" ", 2*maxOperationJSON), http.StatusRequestEntityTooLarge},
		}
		for _, tt := range tests {
			resp, err := http.Post(f.srv.URL+tt.path, "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var msg struct{ Message string }
			if resp.StatusCode != tt.status || json.Unmarshal(b, &msg) != nil || msg.Message == "" {
				t.Errorf("%s: POST %s = %d %s, want %d with a JSON message", tt.name, tt.path, resp.StatusCode, b, tt.status)
			}
		}
	})
}

func TestDirectoryUnknownAndTombstoned(t *testing.T) {
	t.Parallel()
	f := newPLCFixture(t)
	ctx := t.Context()
	unknown := syntax.DID("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
	for _, suffix := range []string{"", "/data", "/log", "/log/audit", "/log/last"} {
		resp, err := http.Get(f.srv.URL + "/" + unknown.String() + suffix)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), `"message"`) {
			t.Errorf("GET /<unknown>%s = %d %s, want 404 with a JSON message", suffix, resp.StatusCode, b)
		}
	}
	if _, err := f.client.Data(ctx, unknown); !errors.Is(err, ErrDIDNotFound) {
		t.Errorf("Data(unknown) = %v, want ErrDIDNotFound", err)
	}

	a := f.createAccount(t, "gina.example.com")
	tomb, err := NewTombstone(f.lastCID(t, a.did), a.server)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.client.Submit(ctx, a.did, tomb); err != nil {
		t.Fatalf("Submit(tombstone) = %v", err)
	}
	if _, err := f.client.Document(ctx, a.did); !errors.Is(err, ErrTombstoned) {
		t.Errorf("Document(tombstoned) = %v, want ErrTombstoned (410)", err)
	}
	if _, err := f.client.Data(ctx, a.did); !errors.Is(err, ErrTombstoned) {
		t.Errorf("Data(tombstoned) = %v, want ErrTombstoned (410)", err)
	}
	if last, err := f.client.LastOp(ctx, a.did); err != nil || last.Type != TypeTombstone {
		t.Errorf("LastOp(tombstoned) = %+v, %v; want the tombstone", last, err)
	}
	after, _ := NewUpdate(f.lastCID(t, a.did), a.state, a.server)
	if err := f.dir.Submit(ctx, a.did, after); !errors.Is(err, ErrTombstoned) {
		t.Errorf("Submit(update after tombstone) = %v, want ErrTombstoned", err)
	}
}

func TestDirectoryRecovery(t *testing.T) {
	t.Parallel()
	f := newPLCFixture(t)
	ctx := t.Context()

	t.Run("within the window", func(t *testing.T) {
		a := f.createAccount(t, "hank.example.com")
		gcid := f.lastCID(t, a.did)
		// The server key (lower priority) moves the account somewhere hostile...
		hijack := a.state
		hijack.Services = map[string]Service{"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: "https://evil.example.com"}}
		bad, _ := NewUpdate(gcid, hijack, a.server)
		if err := f.client.Submit(ctx, a.did, bad); err != nil {
			t.Fatalf("Submit(hijack) = %v", err)
		}
		f.clock.Advance(71 * time.Hour)
		// ...and the user's recovery key, first in the list, overrides it from genesis.
		fix, _ := NewUpdate(gcid, a.state, a.recovery)
		if err := f.client.Submit(ctx, a.did, fix); err != nil {
			t.Fatalf("Submit(recovery) = %v", err)
		}
		data, err := f.client.Data(ctx, a.did)
		if err != nil || data.Services["atproto_pds"].Endpoint != "https://pds.example.com" {
			t.Errorf("Data after recovery = %+v, %v; want the original PDS", data, err)
		}
		audit, _ := f.client.AuditLog(ctx, a.did)
		if len(audit) != 3 || !audit[1].Nullified || audit[2].Nullified {
			t.Errorf("audit after recovery: nullified flags wrong in %+v", audit)
		}
		if err := VerifyAuditLog(a.did, audit); err != nil {
			t.Errorf("VerifyAuditLog(after recovery) = %v", err)
		}
	})

	t.Run("too late", func(t *testing.T) {
		a := f.createAccount(t, "iris.example.com")
		gcid := f.lastCID(t, a.did)
		st := a.state
		st.AlsoKnownAs = []string{"at://iris.example.org"}
		upd, _ := NewUpdate(gcid, st, a.server)
		if err := f.client.Submit(ctx, a.did, upd); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(RecoveryWindow + time.Second)
		fix, _ := NewUpdate(gcid, a.state, a.recovery)
		if err := f.dir.Submit(ctx, a.did, fix); !errors.Is(err, ErrLateRecovery) {
			t.Errorf("Submit(recovery after 72h) = %v, want ErrLateRecovery", err)
		}
	})
}
