package appview

import (
	"database/sql"
	"fmt"
	"slices"
	"testing"
)

// TestMergeFeedsMatchesFullSort pages through the timelines of a synthetic network with
// mergeFeeds and checks every page against a sort of all the followed accounts' items.
func TestMergeFeedsMatchesFullSort(t *testing.T) {
	t.Parallel()
	g := newGenerator(genConfig{users: 40, posts: 1500, follows: 12, seed: 3})
	a := openBenchIndex(t, t.TempDir(), nil)
	defer a.Close()
	ingest(t, a, g.network())
	for _, viewer := range g.dids[:8] {
		for _, want := range []int{1, 7, 50} {
			t.Run(fmt.Sprintf("%s/%d", viewer, want), func(t *testing.T) {
				err := a.read(t.Context(), viewer, func(r *req) error {
					dids, err := r.timelineAccounts(viewer)
					if err != nil {
						return err
					}
					var authors []*actorRow
					var all []feedItem
					for _, d := range dids {
						if ar := r.actors[d]; ar != nil && ar.lastItemAt > 0 {
							authors = append(authors, ar)
						}
						items, err := allFeedItems(r, d)
						if err != nil {
							return err
						}
						all = append(all, items...)
					}
					slices.SortFunc(all, func(x, y feedItem) int {
						switch {
						case y.key().less(x.key()):
							return -1
						case x.key().less(y.key()):
							return 1
						}
						return 0
					})
					cur := topCursor()
					for page := 0; ; page++ {
						got, err := r.mergeFeeds(authors, cur, want)
						if err != nil {
							return err
						}
						wantItems := all[min(page*want, len(all)):min((page+1)*want, len(all))]
						if !slices.Equal(got, wantItems) {
							t.Fatalf("page %d: mergeFeeds = %d items %v\nwant %d items %v", page, len(got), got, len(wantItems), wantItems)
						}
						if len(got) < want {
							return nil
						}
						cur = got[len(got)-1].key()
					}
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// allFeedItems returns every feed item of did.
func allFeedItems(r *req, did string) ([]feedItem, error) {
	var out []feedItem
	err := r.rows(`SELECT sort_at, uri, post_uri, coalesce(repost_cid, '') FROM feed_items WHERE originator = ?`, []any{did},
		func(rows *sql.Rows) error {
			it := feedItem{originator: did}
			out = append(out, it)
			return rows.Scan(&out[len(out)-1].at, &out[len(out)-1].uri, &out[len(out)-1].postURI, &out[len(out)-1].repostCID)
		})
	return out, err
}
