package identity

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// localHandles is the node's in-process handle table, as a test fake.
type localHandles map[syntax.Handle]syntax.DID

func (l localHandles) DIDForHandle(_ context.Context, h syntax.Handle) (syntax.DID, bool, error) {
	did, ok := l[h]
	return did, ok, nil
}

// fakeDNS answers TXT lookups from a table; a missing name is NXDOMAIN.
type fakeDNS struct {
	mu      sync.Mutex
	records map[string][]string
}

func (d *fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	recs, ok := d.records[name]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return recs, nil
}

// countingHandler counts requests that reach h.
func countingHandler(h http.Handler, n *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

func TestTwoNodesResolveFromOneDirectory(t *testing.T) {
	t.Parallel()
	f := newPLCFixture(t)
	a := f.createAccount(t, "alice.test")
	nodeA := NewResolver(ResolverOptions{PLCURL: f.srv.URL, AllowPrivateNetwork: true, LocalHandles: localHandles{"alice.test": a.did}})
	nodeB := NewResolver(ResolverOptions{PLCURL: f.srv.URL, AllowPrivateNetwork: true, DNS: &fakeDNS{}})
	ctx := t.Context()

	for name, r := range map[string]*Resolver{"node A": nodeA, "node B": nodeB} {
		ident, err := r.LookupIdentity(ctx, a.did.AtIdentifier())
		if err != nil {
			t.Fatalf("%s: LookupIdentity(%s) = %v", name, a.did, err)
		}
		key, err := ident.PublicKey()
		if err != nil || !key.Equal(pub(t, a.signing)) {
			t.Errorf("%s: signing key = %v, %v; want the account's", name, key, err)
		}
		if got := ident.PDSEndpoint(); got != "https://pds.example.com" {
			t.Errorf("%s: PDSEndpoint() = %q", name, got)
		}
	}
	// Node A hosts alice.test and verifies it in-process; node B cannot, so it shows
	// handle.invalid rather than trusting the document's claim.
	if ident, _ := nodeA.LookupIdentity(ctx, a.did.AtIdentifier()); ident.Handle != "alice.test" {
		t.Errorf("node A handle = %q, want alice.test", ident.Handle)
	}
	if ident, _ := nodeB.LookupIdentity(ctx, a.did.AtIdentifier()); !ident.Handle.IsInvalidHandle() {
		t.Errorf("node B handle = %q, want handle.invalid", ident.Handle)
	}
	if did, err := nodeA.ResolveHandle(ctx, "Alice.TEST"); err != nil || did != a.did {
		t.Errorf("node A ResolveHandle(Alice.TEST) = %s, %v; want %s", did, err, a.did)
	}
	if _, err := nodeB.ResolveHandle(ctx, "alice.test"); err == nil {
		t.Error("node B ResolveHandle(alice.test) succeeded without DNS")
	}
	raw, err := nodeB.ResolveDID(ctx, a.did)
	if err != nil || !strings.Contains(string(raw), `"@context"`) {
		t.Errorf("ResolveDID() = %s, %v; want the served document", raw, err)
	}
	if _, err := nodeB.ResolveDID(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, ErrDIDNotFound) {
		t.Errorf("ResolveDID(unknown) = %v, want ErrDIDNotFound", err)
	}
}

func TestResolverCacheAndPurge(t *testing.T) {
	t.Parallel()
	f := newPLCFixture(t)
	var hits atomic.Int64
	counted := httptest.NewServer(countingHandler(f.dir.Handler(), &hits))
	t.Cleanup(counted.Close)
	a := f.createAccount(t, "bob.test")
	r := NewResolver(ResolverOptions{PLCURL: counted.URL, AllowPrivateNetwork: true, LocalHandles: localHandles{"bob.test": a.did}})
	ctx := t.Context()

	for range 3 {
		if _, err := r.LookupIdentity(ctx, a.did.AtIdentifier()); err != nil {
			t.Fatalf("LookupIdentity() = %v", err)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("3 lookups made %d directory requests, want 1", n)
	}

	// The account moves; the cache still says the old PDS until purged.
	st := a.state
	st.Services = map[string]Service{"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: "https://new.example.com"}}
	upd, _ := NewUpdate(f.lastCID(t, a.did), st, a.server)
	if err := f.client.Submit(ctx, a.did, upd); err != nil {
		t.Fatal(err)
	}
	ident, _ := r.LookupIdentity(ctx, a.did.AtIdentifier())
	if got := ident.PDSEndpoint(); got != "https://pds.example.com" {
		t.Errorf("cached PDSEndpoint() = %q, want the old one", got)
	}
	if err := r.Purge(ctx, a.did); err != nil {
		t.Fatalf("Purge() = %v", err)
	}
	ident, err := r.LookupIdentity(ctx, a.did.AtIdentifier())
	if err != nil || ident.PDSEndpoint() != "https://new.example.com" {
		t.Errorf("after Purge: PDSEndpoint() = %q, %v; want the new one", ident.PDSEndpoint(), err)
	}
	if err := r.PurgeHandle(ctx, "bob.test"); err != nil {
		t.Errorf("PurgeHandle() = %v", err)
	}
}

func TestDIDWebServiceDocument(t *testing.T) {
	t.Parallel()
	key := newK256(t)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	host := "localhost:" + port
	doc, err := ServiceDIDDocument(host, "http://"+host+"/", pub(t, key))
	if err != nil {
		t.Fatalf("ServiceDIDDocument() = %v", err)
	}
	mux.HandleFunc("GET /.well-known/did.json", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(doc)
	})
	did := syntax.DID("did:web:localhost%3A" + port)
	if doc.ID != did {
		t.Fatalf("ServiceDIDDocument().ID = %s, want %s", doc.ID, did)
	}

	r := NewResolver(ResolverOptions{AllowPrivateNetwork: true})
	ident, err := r.LookupIdentity(t.Context(), did.AtIdentifier())
	if err != nil {
		t.Fatalf("LookupIdentity(%s) = %v", did, err)
	}
	if k, err := ident.PublicKey(); err != nil || !k.Equal(pub(t, key)) {
		t.Errorf("did:web key = %v, %v", k, err)
	}
	for _, svc := range []string{"atproto_pds", "bsky_appview", "bsky_notif"} {
		if got := ident.GetServiceEndpoint(svc); got != "http://"+host {
			t.Errorf("service %s endpoint = %q, want http://%s", svc, got, host)
		}
	}
}

func TestDIDWebURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		did  syntax.DID
		want string
	}{
		{"did:web:example.com", "https://example.com/.well-known/did.json"},
		{"did:web:localhost", "http://localhost/.well-known/did.json"},
		{"did:web:localhost%3A2583", "http://localhost:2583/.well-known/did.json"},
		{"did:web:example.com%3A443", ""},
		{"did:web:example.com:user:alice", ""},
		{"did:web:localhost%3Anope", ""},
		{"did:web:example.local", ""},
	}
	for _, tt := range tests {
		got, err := didWebURL(tt.did)
		if tt.want == "" {
			if !errors.Is(err, ErrUnsupportedDID) {
				t.Errorf("didWebURL(%s) = %q, %v; want ErrUnsupportedDID", tt.did, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("didWebURL(%s) = %q, %v; want %q", tt.did, got, err, tt.want)
		}
	}
}

func TestPrivateNetworkGuard(t *testing.T) {
	t.Parallel()
	f := newPLCFixture(t)
	a := f.createAccount(t, "carol.test")

	resp, err := NewHTTPClient(false, 0).Get(f.srv.URL + "/_health")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrPrivateNetwork) {
		t.Errorf("GET 127.0.0.1 with private networks refused = %v, want ErrPrivateNetwork", err)
	}
	r := NewResolver(ResolverOptions{PLCURL: f.srv.URL})
	if _, err := r.LookupIdentity(t.Context(), a.did.AtIdentifier()); !errors.Is(err, ErrPrivateNetwork) {
		t.Errorf("LookupIdentity via a loopback PLC = %v, want ErrPrivateNetwork", err)
	}
	if err := r.PLC().Submit(t.Context(), a.did, a.genesis); !errors.Is(err, ErrPrivateNetwork) {
		t.Errorf("PLCClient.Submit to loopback = %v, want ErrPrivateNetwork", err)
	}
	// Allowed, the same request works.
	resp, err = NewHTTPClient(true, 0).Get(f.srv.URL + "/_health")
	if err != nil {
		t.Fatalf("GET 127.0.0.1 with private networks allowed = %v", err)
	}
	resp.Body.Close()
}

func TestIsPublic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"fc00::1", false},
		{"fe80::1", false},
		{"224.0.0.1", false},
		{"::ffff:127.0.0.1", false},
		{"8.8.8.8", true},
		{"2606:4700:4700::1111", true},
	}
	for _, tt := range tests {
		if got := isPublic(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("isPublic(%s) = %t, want %t", tt.addr, got, tt.want)
		}
	}
}

// tlsHandleServer serves /.well-known/atproto-did over TLS for any *.example.com name
// and returns a client that sends every request to it, trusting its certificate.
func tlsHandleServer(t *testing.T, byHost map[string]string) *http.Client {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := byHost[r.Host]
		if r.URL.Path != "/.well-known/atproto-did" || !ok {
			http.Error(w, "User not found", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	client := srv.Client()
	tr := client.Transport.(*http.Transport).Clone()
	addr := srv.Listener.Addr().String()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	tr.DialTLSContext = nil
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.MinVersion = tls.VersionTLS12
	client.Transport = tr
	return client
}

func TestVerifyHandle(t *testing.T) {
	t.Parallel()
	const (
		alice = syntax.DID("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
		bob   = syntax.DID("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb")
	)
	dns := &fakeDNS{records: map[string][]string{
		"_atproto.dns.example.com":      {"v=spf1 -all", "did=" + alice.String()},
		"_atproto.twice.example.com":    {"did=" + alice.String(), "did=" + alice.String()},
		"_atproto.conflict.example.com": {"did=" + alice.String(), "did=" + bob.String()},
		"_atproto.prefer.example.com":   {"did=" + alice.String()},
		"_atproto.garbage.example.com":  {"did=not-a-did"},
	}}
	client := tlsHandleServer(t, map[string]string{
		"web.example.com":    "\n  " + alice.String() + "\n",
		"prefer.example.com": bob.String(),
		"junk.example.com":   "<html>hello</html>",
	})
	r := NewResolver(ResolverOptions{HTTPClient: client, DNS: dns, LocalHandles: localHandles{"local.test": alice}})

	tests := []struct {
		name    string
		handle  syntax.Handle
		did     syntax.DID
		wantErr error // nil: verified
		anyErr  bool
	}{
		{name: "dns", handle: "dns.example.com", did: alice},
		{name: "dns upper case", handle: "DNS.Example.COM", did: alice},
		{name: "dns repeated record", handle: "twice.example.com", did: alice},
		{name: "dns other did", handle: "dns.example.com", did: bob, wantErr: ErrHandleMismatch},
		{name: "dns two dids", handle: "conflict.example.com", did: alice, anyErr: true},
		{name: "dns bad did", handle: "garbage.example.com", did: alice, anyErr: true},
		{name: "well-known", handle: "web.example.com", did: alice},
		{name: "dns preferred over well-known", handle: "prefer.example.com", did: alice},
		{name: "well-known not a did", handle: "junk.example.com", did: alice, anyErr: true},
		{name: "nowhere", handle: "nobody.example.com", did: alice, wantErr: ErrHandleNotFound},
		{name: "local hook", handle: "local.test", did: alice},
		{name: "test tld not local", handle: "other.test", did: alice, wantErr: ErrHandleNotFound},
		{name: "reserved tld", handle: "alice.local", did: alice, wantErr: ErrHandleNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := r.VerifyHandle(t.Context(), tt.handle, tt.did)
			switch {
			case tt.anyErr:
				if err == nil {
					t.Errorf("VerifyHandle(%s, %s) = nil, want an error", tt.handle, tt.did)
				}
			case tt.wantErr == nil:
				if err != nil {
					t.Errorf("VerifyHandle(%s, %s) = %v, want nil", tt.handle, tt.did, err)
				}
			case !errors.Is(err, tt.wantErr):
				t.Errorf("VerifyHandle(%s, %s) = %v, want %v", tt.handle, tt.did, err, tt.wantErr)
			}
		})
	}
}

// FuzzParseDIDDocument feeds untrusted DID documents to the parser and to indigo's
// extraction of keys, services and handles, as a lookup does.
func FuzzParseDIDDocument(f *testing.F) {
	did := syntax.DID("did:plc:z72i7hdynmk6r22z27h6tvur")
	st := State{
		DID:                 did,
		VerificationMethods: map[string]string{"atproto": "did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"},
		AlsoKnownAs:         []string{"at://bsky.app"},
		Services:            map[string]Service{"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: "https://bsky.social"}},
	}
	b, _ := json.Marshal(st.Document())
	f.Add(b)
	f.Add([]byte(`{"id":"did:plc:z72i7hdynmk6r22z27h6tvur","verificationMethod":[{"id":"#atproto","type":"EcdsaSecp256k1VerificationKey2019","controller":"did:plc:z72i7hdynmk6r22z27h6tvur","publicKeyMultibase":"zQ3s"}]}`))
	f.Add([]byte(`{"id":"did:plc:other"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		doc, err := parseDIDDocument(did, raw)
		if err != nil {
			return
		}
		if doc.DID != did {
			t.Fatalf("parseDIDDocument accepted a document for %s", doc.DID)
		}
		ident := identity.ParseIdentity(doc)
		ident.PublicKey()
		ident.PDSEndpoint()
		ident.DeclaredHandle()
	})
}
