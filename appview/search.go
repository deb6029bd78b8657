package appview

import (
	"database/sql"
	"net/http"
	"strconv"
	"strings"

	"github.com/aerie-social/aerie/node/xrpc"
)

// maxSearchOffset bounds offset cursors, so a client cannot make SQLite skip millions of
// rows.
const maxSearchOffset = 10_000

func itoa(n int) string { return strconv.Itoa(n) }

// offsetCursor reads a numeric offset cursor.
func offsetCursor(hr *http.Request) (int, error) {
	s := hr.URL.Query().Get("cursor")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxSearchOffset {
		return 0, xrpc.InvalidRequest("malformed cursor")
	}
	return n, nil
}

// searchPosts answers app.bsky.feed.searchPosts from the FTS5 index: q's words must all
// appear; sort latest (default here) or top (by likes); author, mentions-less filters
// since/until/author/lang narrow it.
func (a *AppView) searchPosts(hr *http.Request, viewer string) (any, error) {
	q := hr.URL.Query()
	fq := ftsQuery(q.Get("q"), false)
	if fq == "" {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "BadQueryString", Message: "q is required"}
	}
	limit, err := limitParam(hr, 25, 100)
	if err != nil {
		return nil, err
	}
	offset, err := offsetCursor(hr)
	if err != nil {
		return nil, err
	}
	order := `p.sort_at DESC`
	if q.Get("sort") == "top" {
		order = `p.like_count + p.repost_count DESC, p.sort_at DESC`
	}
	out := struct {
		Cursor    string      `json:"cursor,omitempty"`
		HitsTotal *int64      `json:"hitsTotal,omitempty"`
		Posts     []*postView `json:"posts"`
	}{Posts: []*postView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		conds := []string{`posts_fts MATCH ?`}
		args := []any{fq}
		if s := q.Get("author"); s != "" {
			did, err := r.resolveActor(s)
			if err != nil {
				return err
			}
			conds, args = append(conds, `p.author = ?`), append(args, did)
		}
		for _, p := range []struct{ name, cond string }{{"since", `p.sort_at >= ?`}, {"until", `p.sort_at < ?`}} {
			if s := q.Get(p.name); s != "" {
				dt, err := xrpc.ParseDatetime(s)
				if err != nil {
					return xrpc.InvalidRequest("%s must be a datetime", p.name)
				}
				conds, args = append(conds, p.cond), append(args, dt.Time().UnixMicro())
			}
		}
		if s := q.Get("lang"); s != "" {
			conds, args = append(conds, `(',' || p.langs || ',') LIKE ?`), append(args, "%,"+s+",%")
		}
		var uris []string
		err := r.rows(`SELECT p.uri FROM posts_fts f JOIN posts p ON p.rowid = f.rowid
			WHERE `+strings.Join(conds, " AND ")+` ORDER BY `+order+` LIMIT ? OFFSET ?`,
			append(args, limit, offset), func(rows *sql.Rows) error {
				var u string
				if err := rows.Scan(&u); err != nil {
					return err
				}
				uris = append(uris, u)
				return nil
			})
		if err != nil {
			return err
		}
		out.Posts, err = r.postViews(uris)
		if len(uris) == limit {
			out.Cursor = itoa(offset + limit)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
