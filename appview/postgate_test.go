package appview

import (
	"testing"

	"github.com/bluesky-social/indigo/api/bsky"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/repo"
)

// quoteState is what a viewer sees of a quoting post's embed: "record", "detached", or
// "" when the post has no record embed.
func quoteState(p *bsky.FeedDefs_PostView) string {
	if p.Embed == nil || p.Embed.EmbedRecord_View == nil || p.Embed.EmbedRecord_View.Record == nil {
		return ""
	}
	switch r := p.Embed.EmbedRecord_View.Record; {
	case r.EmbedRecord_ViewDetached != nil && r.EmbedRecord_ViewDetached.Detached:
		return "detached"
	case r.EmbedRecord_ViewRecord != nil:
		return "record"
	}
	return "other"
}

func TestPostgates(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice, bob, carol := n.account("alice"), n.account("bob"), n.account("carol")
	p := n.post(alice, "quote me, or not")
	q1, q2, q3 := n.quote(bob, "bob quotes", p), n.quote(carol, "carol quotes", p), n.quote(alice, "self quote", p)
	rkey := syntax.ATURI(p.uri).RecordKey().String()

	gateRecord := func(fields map[string]any) *repo.Record {
		t.Helper()
		fields["$type"], fields["post"], fields["createdAt"] = colPostgate, p.uri, "2026-11-25T12:00:00Z"
		rec, err := repo.RecordFromJSON(mustJSON(t, fields))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	check := func(step string, wantQuotes []string, states map[string]string, disabledForBob bool) {
		t.Helper()
		n.sync()
		if got := n.postView(bob, p.uri); got.QuoteCount == nil || *got.QuoteCount != int64(len(wantQuotes)) ||
			(got.Viewer.EmbeddingDisabled != nil && *got.Viewer.EmbeddingDisabled) != disabledForBob {
			t.Errorf("%s: quoted post quoteCount=%v embeddingDisabled=%v, want %d and %v", step, got.QuoteCount,
				got.Viewer.EmbeddingDisabled, len(wantQuotes), disabledForBob)
		}
		if got := n.postView(alice, p.uri); got.Viewer.EmbeddingDisabled != nil && *got.Viewer.EmbeddingDisabled {
			t.Errorf("%s: the author's own view says embeddingDisabled", step)
		}
		var out bsky.FeedGetQuotes_Output
		n.get(carol, "app.bsky.feed.getQuotes", vals("uri", p.uri), &out)
		got := map[string]bool{}
		for _, q := range out.Posts {
			got[q.Uri] = true
		}
		for _, u := range wantQuotes {
			if !got[u] {
				t.Errorf("%s: getQuotes lacks %s", step, u)
			}
		}
		if len(out.Posts) != len(wantQuotes) {
			t.Errorf("%s: getQuotes returned %d posts, want %d", step, len(out.Posts), len(wantQuotes))
		}
		for u, want := range states {
			if got := quoteState(n.postView(carol, u)); got != want {
				t.Errorf("%s: embed of %s = %q, want %q", step, u, got, want)
			}
		}
	}
	check("no postgate", []string{q1.uri, q2.uri, q3.uri}, map[string]string{q1.uri: "record", q2.uri: "record", q3.uri: "record"}, false)

	// Alice detaches Bob's quote.
	n.write(alice, repo.Write{Action: repo.ActionCreate, Collection: syntax.NSID(colPostgate), RKey: syntax.RecordKey(rkey),
		Record: gateRecord(map[string]any{"detachedEmbeddingUris": []any{q1.uri}})})
	check("detached", []string{q2.uri, q3.uri}, map[string]string{q1.uri: "detached", q2.uri: "record", q3.uri: "record"}, false)

	// Then disables quoting: every quote by someone else is detached, her own is not.
	n.write(alice, repo.Write{Action: repo.ActionUpdate, Collection: syntax.NSID(colPostgate), RKey: syntax.RecordKey(rkey),
		Record: gateRecord(map[string]any{"embeddingRules": []any{map[string]any{"$type": "app.bsky.feed.postgate#disableRule"}}})})
	q4 := n.quote(carol, "quoting anyway", p)
	check("disabled", []string{q3.uri}, map[string]string{q1.uri: "detached", q2.uri: "detached", q3.uri: "record", q4.uri: "detached"}, true)
	if r := reasons(n.notifications(alice)); r["quote"] != 2 {
		t.Errorf("alice's quote notifications = %d, want 2 (none for her own quote or the one made while disabled)", r["quote"])
	}

	// Deleting the postgate attaches everything again.
	n.write(alice, repo.Write{Action: repo.ActionDelete, Collection: syntax.NSID(colPostgate), RKey: syntax.RecordKey(rkey)})
	check("removed", []string{q1.uri, q2.uri, q3.uri, q4.uri}, map[string]string{q1.uri: "record", q4.uri: "record"}, false)
}
