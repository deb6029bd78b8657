package appview

import (
	"encoding/json"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/google/go-cmp/cmp"
)

// TestNotificationRecords checks the record of each notification against the record as
// written, for the plain likes, reposts and follows whose records the index rebuilds from
// their rows, and for those it must keep whole: an extra field, a via, and posts.
func TestNotificationRecords(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	a, b, c := n.account("a"), n.account("b"), n.account("c")
	p := n.post(a, "post")
	rp := n.repost(c, p)
	values := map[string]map[string]any{}
	add := func(r ref, v map[string]any) { values[r.uri] = v }
	at := "2026-05-01T12:00:00.123Z"
	v := map[string]any{"subject": sr(p), "createdAt": at}
	add(n.create(b, colLike, "", v), v)
	v = map[string]any{"subject": sr(p), "createdAt": "2026-05-01T12:00:00+02:00"}
	add(n.create(b, colRepost, "", v), v)
	v = map[string]any{"subject": a.String(), "createdAt": at}
	add(n.create(b, colFollow, "", v), v)
	v = map[string]any{"subject": sr(p), "createdAt": at, "via": sr(rp)}
	add(n.create(c, colLike, "", v), v)
	v = map[string]any{"subject": a.String(), "createdAt": at, "note": "extra field"}
	add(n.create(c, colFollow, "", v), v)
	v = map[string]any{"text": "hi", "createdAt": at, "reply": map[string]any{"root": sr(p), "parent": sr(p)}}
	add(n.create(b, colPost, "", v), v)
	n.sync()

	for _, viewer := range []syntax.DID{a, c} {
		var out map[string]any
		n.get(viewer, "app.bsky.notification.listNotifications", nil, &out)
		list, _ := out["notifications"].([]any)
		for _, x := range list {
			nt := x.(map[string]any)
			uri := nt["uri"].(string)
			want, ok := values[uri]
			if !ok {
				continue // the repost of p, written by the helper
			}
			// The record as a client reads it: JSON of what was written.
			raw, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			var wantJSON map[string]any
			if err := json.Unmarshal(raw, &wantJSON); err != nil {
				t.Fatal(err)
			}
			wantJSON["$type"] = uriCollection(uri)
			if diff := cmp.Diff(wantJSON, nt["record"]); diff != "" {
				t.Errorf("listNotifications(%s) record of %s (-want +got):\n%s", viewer, uri, diff)
			}
			delete(values, uri)
		}
	}
	if len(values) > 0 {
		t.Errorf("no notification for %d records: %v", len(values), values)
	}
}

// TestNotificationsOnlyForHostedAccounts checks that the index keeps notifications for the
// accounts Config.Hosted names and for no other, from the moment an account is hosted.
func TestNotificationsOnlyForHostedAccounts(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	home, away, fan := n.account("home"), n.account("away"), n.account("fan")
	n.mu.Lock()
	n.hosted = map[syntax.DID]bool{home: true}
	n.mu.Unlock()
	count := func(viewer syntax.DID) int {
		var out map[string]any
		n.get(viewer, "app.bsky.notification.listNotifications", nil, &out)
		list, _ := out["notifications"].([]any)
		return len(list)
	}
	for _, did := range []syntax.DID{home, away} {
		p := n.post(did, "post")
		n.like(fan, p)
		n.follow(fan, did)
		n.reply(fan, "reply", p, p)
	}
	n.sync()
	if got := count(home); got != 3 {
		t.Errorf("hosted account has %d notifications, want 3 (like, follow, reply)", got)
	}
	if got := count(away); got != 0 {
		t.Errorf("account hosted elsewhere has %d notifications, want 0", got)
	}

	n.mu.Lock()
	n.hosted[away] = true
	n.mu.Unlock()
	n.like(fan, n.post(away, "after moving in"))
	n.sync()
	if got := count(away); got != 1 {
		t.Errorf("account hosted since has %d notifications, want 1", got)
	}
}
