package appview

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testNet is a small network: a real repo store, a running sequencer, and an AppView
// consuming it, served over a real HTTP server. The AppView can be stopped and reopened
// on the same index file to test restarts.
type testNet struct {
	t     testing.TB
	dir   string
	store *repo.Store
	seq   *relay.Sequencer

	mu      sync.Mutex
	av      *AppView
	stopAV  func()
	lastSeq int64
	nextDID int
	// feedgens maps feed service DIDs to their servers' base URLs: the DID resolution the
	// node does for FeedMethods.
	feedgens map[syntax.DID]string
	// hosted, when set, is the accounts Config.Hosted reports as hosted; nil hosts every one.
	hosted map[syntax.DID]bool

	srv *httptest.Server
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	store, err := repo.Open(ctx, dir, repo.StoreConfig{}, discardLog())
	if err != nil {
		t.Fatalf("repo.Open = %v", err)
	}
	seq, err := relay.Open(ctx, filepath.Join(dir, "relay.sqlite"), relay.DefaultConfig(), discardLog())
	if err != nil {
		t.Fatalf("relay.Open = %v", err)
	}
	seqCtx, stopSeq := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := seq.Run(seqCtx); err != nil {
			t.Errorf("Sequencer.Run = %v", err)
		}
	})
	n := &testNet{t: t, dir: dir, store: store, seq: seq}
	n.startAV()
	n.srv = httptest.NewServer(http.HandlerFunc(n.serveXRPC))
	t.Cleanup(func() {
		n.srv.Close()
		n.stopAVAndClose()
		stopSeq()
		wg.Wait()
		if err := seq.Close(); err != nil {
			t.Errorf("Sequencer.Close = %v", err)
		}
		if err := store.Close(); err != nil {
			t.Errorf("Store.Close = %v", err)
		}
	})
	return n
}

// startAV opens the index and runs the indexer until stopAVAndClose.
func (n *testNet) startAV() {
	n.t.Helper()
	cfg := DefaultConfig()
	cfg.PublicURL = "https://pds.test"
	cfg.WaitTimeout = 10 * time.Second
	cfg.Hosted = func(did string) bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.hosted == nil || n.hosted[syntax.DID(did)]
	}
	av, err := Open(context.Background(), filepath.Join(n.dir, "index.sqlite"), cfg, discardLog())
	if err != nil {
		n.t.Fatalf("appview.Open = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := av.Run(ctx, n.seq); err != nil {
			n.t.Errorf("AppView.Run = %v", err)
		}
	}()
	n.mu.Lock()
	n.av = av
	n.stopAV = func() {
		cancel()
		<-done
		if err := av.Close(); err != nil {
			n.t.Errorf("AppView.Close = %v", err)
		}
	}
	n.mu.Unlock()
}

func (n *testNet) stopAVAndClose() {
	n.mu.Lock()
	stop := n.stopAV
	n.stopAV = nil
	n.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (n *testNet) appview() *AppView {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.av
}

// serveXRPC routes /xrpc/<nsid> to the AppView's methods; the test names the viewer in
// the X-Viewer header where the node would authenticate.
func (n *testNet) serveXRPC(w http.ResponseWriter, r *http.Request) {
	nsid := strings.TrimPrefix(r.URL.Path, "/xrpc/")
	av := n.appview()
	for _, m := range append(av.Methods(), av.FeedMethods(n.feedDeps())...) {
		if m.NSID != nsid {
			continue
		}
		if m.Procedure != (r.Method == http.MethodPost) {
			http.Error(w, "wrong method", http.StatusMethodNotAllowed)
			return
		}
		if v := r.Header.Get("X-Viewer"); v != "" {
			r = r.WithContext(WithViewer(r.Context(), syntax.DID(v)))
		}
		m.Handler(w, r)
		return
	}
	http.NotFound(w, r)
}

// submit sequences ev and remembers its seq.
func (n *testNet) submit(ev *relay.Event) {
	n.t.Helper()
	seq, err := n.seq.Submit(context.Background(), ev)
	if err != nil {
		n.t.Fatalf("Submit(%s) = %v", ev.Kind(), err)
	}
	n.mu.Lock()
	n.lastSeq = max(n.lastSeq, seq)
	n.mu.Unlock()
}

// sync waits until the AppView has indexed everything submitted.
func (n *testNet) sync() {
	n.t.Helper()
	n.mu.Lock()
	seq := n.lastSeq
	n.mu.Unlock()
	if err := n.appview().WaitForSeq(context.Background(), seq); err != nil {
		n.t.Fatalf("WaitForSeq(%d) = %v", seq, err)
	}
}

// account creates a repo and announces its handle, as the node does.
func (n *testNet) account(name string) syntax.DID {
	n.t.Helper()
	n.mu.Lock()
	n.nextDID++
	did := syntax.DID(fmt.Sprintf("did:plc:aerietest%015d", n.nextDID))
	n.mu.Unlock()
	ce, err := n.store.Create(context.Background(), did, nil)
	if err != nil {
		n.t.Fatalf("Create(%s) = %v", did, err)
	}
	n.submit(relay.NewCommit(ce))
	n.submit(relay.NewIdentity(did, syntax.Handle(name+".test")))
	n.submit(relay.NewAccount(did, true, ""))
	return did
}

// write applies writes to did's repo and sequences the commit, as the node does.
func (n *testNet) write(did syntax.DID, writes ...repo.Write) *repo.CommitEvent {
	n.t.Helper()
	ce, err := n.store.ApplyWrites(context.Background(), did, writes, repo.WriteOpts{
		OnCommit: func(ce *repo.CommitEvent) error {
			n.submit(relay.NewCommit(ce))
			return nil
		},
	})
	if err != nil {
		n.t.Fatalf("ApplyWrites(%s) = %v", did, err)
	}
	return ce
}

// ref is a written record's strong reference.
type ref struct{ uri, cid string }

func (n *testNet) create(did syntax.DID, collection string, rkey string, value map[string]any) ref {
	n.t.Helper()
	value["$type"] = collection
	if _, ok := value["createdAt"]; !ok {
		value["createdAt"] = time.Now().UTC().Format(syntax.AtprotoDatetimeLayout)
	}
	raw, err := json.Marshal(value)
	if err != nil {
		n.t.Fatal(err)
	}
	rec, err := repo.RecordFromJSON(raw)
	if err != nil {
		n.t.Fatalf("RecordFromJSON(%s) = %v", raw, err)
	}
	ce := n.write(did, repo.Write{Action: repo.ActionCreate, Collection: syntax.NSID(collection), RKey: syntax.RecordKey(rkey), Record: rec})
	res := ce.Results[0]
	return ref{uri: res.URI.String(), cid: res.CID.String()}
}

func (n *testNet) delete(did syntax.DID, uri string) {
	n.t.Helper()
	u := syntax.ATURI(uri)
	n.write(did, repo.Write{Action: repo.ActionDelete, Collection: u.Collection(), RKey: u.RecordKey()})
}

func sr(r ref) map[string]any { return map[string]any{"uri": r.uri, "cid": r.cid} }

func (n *testNet) post(did syntax.DID, text string) ref {
	return n.create(did, colPost, "", map[string]any{"text": text})
}

func (n *testNet) reply(did syntax.DID, text string, root, parent ref) ref {
	return n.create(did, colPost, "", map[string]any{"text": text, "reply": map[string]any{"root": sr(root), "parent": sr(parent)}})
}

func (n *testNet) quote(did syntax.DID, text string, q ref) ref {
	return n.create(did, colPost, "", map[string]any{"text": text,
		"embed": map[string]any{"$type": "app.bsky.embed.record", "record": sr(q)}})
}

func (n *testNet) like(did syntax.DID, subject ref) ref {
	return n.create(did, colLike, "", map[string]any{"subject": sr(subject)})
}

func (n *testNet) repost(did syntax.DID, subject ref) ref {
	return n.create(did, colRepost, "", map[string]any{"subject": sr(subject)})
}

func (n *testNet) follow(did, subject syntax.DID) ref {
	return n.create(did, colFollow, "", map[string]any{"subject": subject.String()})
}

func (n *testNet) block(did, subject syntax.DID) ref {
	return n.create(did, colBlock, "", map[string]any{"subject": subject.String()})
}

// call makes an XRPC call as viewer ("" for anonymous) and decodes the answer into out
// strictly: an unknown field fails the test. It returns the status.
func (n *testNet) call(viewer syntax.DID, method, nsid string, params url.Values, body any, out any) int {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			n.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	u := n.srv.URL + "/xrpc/" + nsid
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		n.t.Fatal(err)
	}
	if viewer != "" {
		req.Header.Set("X-Viewer", viewer.String())
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, nsid, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(out); err != nil {
			n.t.Fatalf("%s %s: decode %T: %v\n%s", method, nsid, out, err, raw)
		}
	}
	if out != nil && resp.StatusCode != http.StatusOK {
		if eo, ok := out.(*errorBody); ok {
			json.Unmarshal(raw, eo)
		}
	}
	return resp.StatusCode
}

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func (n *testNet) get(viewer syntax.DID, nsid string, params url.Values, out any) {
	n.t.Helper()
	if st := n.call(viewer, http.MethodGet, nsid, params, nil, out); st != http.StatusOK {
		n.t.Fatalf("GET %s?%s = %d", nsid, params.Encode(), st)
	}
}

func vals(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func relayIdentity(did syntax.DID, handle string) *relay.Event {
	return relay.NewIdentity(did, syntax.Handle(handle))
}

func relayAccount(did syntax.DID, active bool, status string) *relay.Event {
	return relay.NewAccount(did, active, status)
}

// feedDeps are the FeedDeps of the test network: endpoints from n.feedgens, and a token
// that names its claims in clear so that a feed generator can check them.
func (n *testNet) feedDeps() FeedDeps {
	return FeedDeps{
		HTTP: &http.Client{Timeout: 10 * time.Second},
		Endpoint: func(_ context.Context, did syntax.DID) (string, error) {
			n.mu.Lock()
			defer n.mu.Unlock()
			if ep, ok := n.feedgens[did]; ok {
				return ep, nil
			}
			return "", fmt.Errorf("no DID document for %s", did)
		},
		ServiceToken: func(_ context.Context, iss syntax.DID, aud, lxm string) (string, error) {
			return testServiceToken(iss.String(), aud, lxm), nil
		},
	}
}

func testServiceToken(iss, aud, lxm string) string { return iss + "|" + aud + "|" + lxm }

// addFeedgen makes did resolve to the server at base.
func (n *testNet) addFeedgen(did syntax.DID, base string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.feedgens == nil {
		n.feedgens = map[syntax.DID]string{}
	}
	n.feedgens[did] = base
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
