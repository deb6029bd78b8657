package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5"

	"github.com/aerie-social/aerie/node/xrpc"
)

// testConfig is a node config for one test: free ports, a temp data dir, the embedded PLC
// directory in process only, an admin password.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.PLC.Listen = ""
	cfg.AdminPassword = "admin-secret"
	return cfg
}

// testClock is a clock tests can move forward while the node runs.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// testNode starts a node on a free loopback port with its data in a temp dir and stops it
// when the test ends. It returns the node and its base URL.
func testNode(t *testing.T, edit ...func(*Config)) (*Node, string) {
	n, base, _ := testNodeClock(t, edit...)
	return n, base
}

// testNodeClock is testNode with a clock the test controls.
func testNodeClock(t *testing.T, edit ...func(*Config)) (*Node, string, *testClock) {
	t.Helper()
	cfg := testConfig(t)
	for _, e := range edit {
		e(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("AERIE_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	n, err := New(ctx, cfg, "test", logger)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	clock := &testClock{}
	n.clock = clock.Now
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	})
	return n, "http://" + n.Addr().String(), clock
}

func getJSON(t *testing.T, method, url, body string, header map[string]string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s = %v", method, url, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: body %q is not JSON: %v", method, url, b, err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

func TestHealthAndBasicPages(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	status, body, _ := getJSON(t, "GET", base+"/xrpc/_health", "", nil)
	if status != 200 || body["version"] != "test" {
		t.Errorf("GET /xrpc/_health = %d %v, want 200 {version: test}", status, body)
	}
	resp, err := http.Get(base + "/no/such/page")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /no/such/page = %d %s, want the web UI's HTML 404", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, path := range []string{"/robots.txt", "/", "/signin"} {
		resp, err := http.Get(base + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET %s = %v, %v", path, resp, err)
		}
		resp.Body.Close()
	}
}

func TestXRPCConventions(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantError  string
	}{
		{"unknown method", "GET", "/xrpc/com.example.nothing", 501, "MethodNotImplemented"},
		{"unknown procedure", "POST", "/xrpc/com.example.nothing", 501, "MethodNotImplemented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, body, _ := getJSON(t, tt.method, base+tt.path, "", nil)
			if status != tt.wantStatus || body["error"] != tt.wantError {
				t.Errorf("%s %s = %d %v, want %d %s", tt.method, tt.path, status, body, tt.wantStatus, tt.wantError)
			}
		})
	}
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	req, _ := http.NewRequest("OPTIONS", base+"/xrpc/com.atproto.server.createSession", nil)
	req.Header.Set("Origin", "https://bsky.app")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,atproto-proxy")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("preflight status = %d, want 204", resp.StatusCode)
	}
	allowed := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers"))
	for _, h := range []string{"authorization", "content-type", "atproto-proxy", "atproto-accept-labelers", "dpop"} {
		if !strings.Contains(allowed, h) {
			t.Errorf("Access-Control-Allow-Headers = %q, missing %s", allowed, h)
		}
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
	}
}

// TestXRPCMux drives the dispatcher with test methods: wrong verbs, bodies and panics.
func TestXRPCMux(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	type input struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	mux := &xrpcMux{log: log, methods: map[string]xrpcMethod{}}
	mux.query("com.example.get", func(w http.ResponseWriter, r *http.Request) error {
		xrpc.WriteJSON(w, 200, map[string]string{"ok": "yes"})
		return nil
	})
	mux.procedure("com.example.put", func(w http.ResponseWriter, r *http.Request) error {
		var in input
		if err := decodeJSON(w, r, 64, &in); err != nil {
			return err
		}
		xrpc.WriteJSON(w, 200, in)
		return nil
	})
	mux.query("com.example.panic", func(w http.ResponseWriter, r *http.Request) error {
		panic("a bug in a handler")
	})
	mux.query("com.example.fail", func(w http.ResponseWriter, r *http.Request) error {
		return io.ErrUnexpectedEOF
	})
	r := chi.NewRouter()
	r.Use(requestMiddleware(log))
	r.Handle("/xrpc/{nsid}", mux)
	srv := httptest.NewServer(r)

	json := map[string]string{"Content-Type": "application/json"}
	tests := []struct {
		name       string
		method     string
		nsid       string
		body       string
		header     map[string]string
		wantStatus int
		wantError  string
	}{
		{"query ok", "GET", "com.example.get", "", nil, 200, ""},
		{"query with POST", "POST", "com.example.get", "", nil, 400, "InvalidRequest"},
		{"procedure with GET", "GET", "com.example.put", "", nil, 400, "InvalidRequest"},
		{"procedure ok", "POST", "com.example.put", `{"name":"a","count":1}`, json, 200, ""},
		{"malformed json", "POST", "com.example.put", `{"name":`, json, 400, "InvalidRequest"},
		{"wrong type", "POST", "com.example.put", `{"count":"x"}`, json, 400, "InvalidRequest"},
		{"empty body", "POST", "com.example.put", ``, json, 400, "InvalidRequest"},
		{"trailing data", "POST", "com.example.put", `{} {}`, json, 400, "InvalidRequest"},
		{"wrong content type", "POST", "com.example.put", `{}`, map[string]string{"Content-Type": "text/plain"}, 400, "InvalidRequest"},
		{"too large", "POST", "com.example.put", `{"name":"` + strings.Repeat("x", 100) + `"}`, json, 413, "PayloadTooLarge"},
		{"panic", "GET", "com.example.panic", "", nil, 500, "InternalServerError"},
		{"plain error", "GET", "com.example.fail", "", nil, 500, "InternalServerError"},
	}
	for _, tt := range tests {
		status, body, _ := getJSON(t, tt.method, srv.URL+"/xrpc/"+tt.nsid, tt.body, tt.header)
		if status != tt.wantStatus {
			t.Errorf("%s: %s %s = %d %v, want %d", tt.name, tt.method, tt.nsid, status, body, tt.wantStatus)
		}
		if tt.wantError != "" && (body["error"] != tt.wantError || body["message"] == "") {
			t.Errorf("%s: body = %v, want error %s with a message", tt.name, body, tt.wantError)
		}
		if status == 500 && strings.Contains(body["message"].(string), "goroutine") {
			t.Errorf("%s: 500 body leaks a stack: %v", tt.name, body)
		}
	}
	srv.Close() // waits for handlers, so the log is complete
	if !strings.Contains(logs.String(), "panic serving request") || !strings.Contains(logs.String(), "goroutine") {
		t.Errorf("log lacks the panic's stack:\n%s", logs.String())
	}
}

func TestDataDirIsLocked(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	log := slog.New(slog.DiscardHandler)
	first, err := New(t.Context(), cfg, "test", log)
	if err != nil {
		t.Fatalf("first New = %v", err)
	}
	if _, err := New(t.Context(), cfg, "test", log); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second New on the same data dir = %v, want an in-use error", err)
	}
	first.close()
	second, err := New(t.Context(), cfg, "test", log)
	if err != nil {
		t.Fatalf("New after the first closed = %v", err)
	}
	second.close()
}

func TestShutdownWaitsForInFlightRequests(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	n, err := New(ctx, cfg, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	release := make(chan struct{})
	n.http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		w.Write([]byte("finished"))
	})
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + n.Addr().String() + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while a request was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if body := <-got; body != "finished" {
		t.Errorf("in-flight request got %q, want finished", body)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func syntaxDID(s string) syntax.DID { return syntax.DID(s) }

func syntaxRKey(t *testing.T, uri string) syntax.RecordKey {
	t.Helper()
	u, err := syntax.ParseATURI(uri)
	if err != nil {
		t.Fatalf("ParseATURI(%q) = %v", uri, err)
	}
	return u.RecordKey()
}

func decodeBody(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
