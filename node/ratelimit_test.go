package node

import (
	"strconv"
	"testing"
	"time"
)

func TestCreateSessionIsRateLimited(t *testing.T) {
	t.Parallel()
	_, base, clock := testNodeClock(t)
	body := `{"identifier":"nobody.test","password":"x"}`
	h := map[string]string{"Content-Type": "application/json"}
	for i := range limitCreateSession5m.Max {
		status, _, hdr := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession", body, h)
		if status != 401 {
			t.Fatalf("attempt %d = %d, want 401", i+1, status)
		}
		if got := hdr.Get("RateLimit-Remaining"); got != strconv.Itoa(limitCreateSession5m.Max-i-1) {
			t.Fatalf("attempt %d: RateLimit-Remaining = %q", i+1, got)
		}
	}
	status, resp, hdr := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession", body, h)
	if status != 429 || resp["error"] != "RateLimitExceeded" || hdr.Get("Retry-After") == "" {
		t.Errorf("attempt past the limit = %d %v (Retry-After %q), want 429 RateLimitExceeded", status, resp, hdr.Get("Retry-After"))
	}
	// Another identifier from the same address has its own budget.
	status, _, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession", `{"identifier":"other.test","password":"x"}`, h)
	if status != 401 {
		t.Errorf("other identifier = %d, want 401", status)
	}
	clock.Advance(limitCreateSession5m.Window + time.Second)
	if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession", body, h); status != 401 {
		t.Errorf("after the window = %d, want 401 again", status)
	}
}

func TestRateLimiterSweep(t *testing.T) {
	t.Parallel()
	now := time.Now()
	rl := newRateLimiter(func() time.Time { return now })
	rl.allow("a", limitCreateAccount)
	now = now.Add(25 * time.Hour)
	rl.sweep()
	if len(rl.windows) != 0 {
		t.Errorf("windows after sweep = %d, want 0", len(rl.windows))
	}
}
