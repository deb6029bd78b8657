package appview

import (
	"database/sql"
	"fmt"
	"net/http"

	"github.com/aerie-social/aerie/node/xrpc"
)

// maxRelationships is getRelationships' limit on others.
const maxRelationships = 30

// viewerList serves getBlocks and getMutes: q selects (did, cursor key, cursor uri) of
// one page of the viewer's list.
func (a *AppView) viewerList(hr *http.Request, viewer, key, q string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cur, err := parseTimeCursor(hr.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		var dids []string
		var last timeCursor
		err := r.rows(q, []any{viewer, cur.at, cur.uri, limit}, func(rows *sql.Rows) error {
			var d string
			if err := rows.Scan(&d, &last.at, &last.uri); err != nil {
				return err
			}
			dids = append(dids, d)
			return nil
		})
		if err != nil {
			return err
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		list := []*profileView{}
		for _, d := range dids {
			if r.actors[d] != nil {
				list = append(list, r.profile(d))
			}
		}
		out[key] = list
		if len(dids) == limit {
			out["cursor"] = last.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *AppView) getBlocks(hr *http.Request, viewer string) (any, error) {
	return a.viewerList(hr, viewer, "blocks", `SELECT subject, sort_at, uri FROM blocks
		WHERE author = ? AND (sort_at, uri) < (?, ?) ORDER BY sort_at DESC, uri DESC LIMIT ?`)
}

func (a *AppView) getMutes(hr *http.Request, viewer string) (any, error) {
	return a.viewerList(hr, viewer, "mutes", `SELECT subject, created_at, subject FROM mutes
		WHERE viewer = ? AND (created_at, subject) < (?, ?) ORDER BY created_at DESC, subject DESC LIMIT ?`)
}

type muteInput struct {
	Actor string `json:"actor"`
}

// mute sets or clears the viewer's private mute of the body's actor.
func (a *AppView) mute(hr *http.Request, viewer string, on bool) (any, error) {
	var in muteInput
	if err := decodeBody(hr, &in); err != nil {
		return nil, err
	}
	if in.Actor == "" {
		return nil, xrpc.InvalidRequest("actor is required")
	}
	var did string
	err := a.read(hr.Context(), viewer, func(r *req) error {
		var err error
		did, err = r.resolveActor(in.Actor)
		return err
	})
	if err != nil {
		return nil, err
	}
	if did == "" {
		return nil, xrpc.InvalidRequest("Actor not found")
	}
	if did == viewer {
		return nil, xrpc.InvalidRequest("Cannot mute oneself")
	}
	err = a.db.Write(hr.Context(), func(tx *sql.Tx) error {
		var err error
		if on {
			_, err = tx.ExecContext(hr.Context(), `INSERT INTO mutes (viewer, subject, created_at) VALUES (?, ?, ?)
				ON CONFLICT DO NOTHING`, viewer, did, a.now().UnixMicro())
		} else {
			_, err = tx.ExecContext(hr.Context(), `DELETE FROM mutes WHERE viewer = ? AND subject = ?`, viewer, did)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mute %s for %s: %w", did, viewer, err)
	}
	return nil, nil
}

func (a *AppView) muteActor(hr *http.Request, viewer string) (any, error) {
	return a.mute(hr, viewer, true)
}

func (a *AppView) unmuteActor(hr *http.Request, viewer string) (any, error) {
	return a.mute(hr, viewer, false)
}

// relationship is app.bsky.graph.defs#relationship (or #notFoundActor).
type relationship struct {
	Type       string `json:"$type"`
	DID        string `json:"did,omitempty"`
	Actor      string `json:"actor,omitempty"`
	NotFound   bool   `json:"notFound,omitempty"`
	Following  string `json:"following,omitempty"`
	FollowedBy string `json:"followedBy,omitempty"`
	Blocking   string `json:"blocking,omitempty"`
	BlockedBy  string `json:"blockedBy,omitempty"`
}

func (a *AppView) getRelationships(hr *http.Request, viewer string) (any, error) {
	others := hr.URL.Query()["others"]
	if len(others) > maxRelationships {
		return nil, xrpc.InvalidRequest("at most %d others", maxRelationships)
	}
	out := struct {
		Actor         string          `json:"actor,omitempty"`
		Relationships []*relationship `json:"relationships"`
	}{Relationships: []*relationship{}}
	err := a.read(hr.Context(), viewer, func(r *req) error {
		actor, err := r.actorParam(hr, "actor")
		if err != nil {
			return err
		}
		out.Actor = actor
		for _, o := range others {
			did, err := r.resolveActor(o)
			if err != nil {
				return err
			}
			if did == "" {
				out.Relationships = append(out.Relationships, &relationship{Type: "app.bsky.graph.defs#notFoundActor", Actor: o, NotFound: true})
				continue
			}
			rel := &relationship{Type: "app.bsky.graph.defs#relationship", DID: did}
			pairs := []struct {
				dest     *string
				q        string
				from, to string
			}{
				{&rel.Following, `SELECT min(uri) FROM follows WHERE author = ? AND subject = ?`, actor, did},
				{&rel.FollowedBy, `SELECT min(uri) FROM follows WHERE author = ? AND subject = ?`, did, actor},
				{&rel.Blocking, `SELECT min(uri) FROM blocks WHERE author = ? AND subject = ?`, actor, did},
				{&rel.BlockedBy, `SELECT min(uri) FROM blocks WHERE author = ? AND subject = ?`, did, actor},
			}
			for _, p := range pairs {
				var u sql.NullString
				if err := r.tx.QueryRowContext(r.ctx, p.q, p.from, p.to).Scan(&u); err != nil {
					return err
				}
				*p.dest = u.String
			}
			out.Relationships = append(out.Relationships, rel)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

const listColumns = `uri, cid, author, name, purpose, coalesce(description, ''), coalesce(avatar, ''), indexed_at, item_count`

type listRow struct {
	uri, cid, author, name, purpose, description, avatar string
	indexedAt, items                                     int64
}

func scanList(rows interface{ Scan(...any) error }) (*listRow, error) {
	l := &listRow{}
	err := rows.Scan(&l.uri, &l.cid, &l.author, &l.name, &l.purpose, &l.description, &l.avatar, &l.indexedAt, &l.items)
	return l, err
}

func (r *req) listView(l *listRow) *listView {
	return &listView{
		URI:           l.uri,
		CID:           l.cid,
		Creator:       r.profile(l.author),
		Name:          l.name,
		Purpose:       l.purpose,
		Description:   l.description,
		Avatar:        r.a.imageURL("avatar", l.author, l.avatar),
		ListItemCount: counted(l.items),
		IndexedAt:     fmtTime(l.indexedAt),
	}
}

func (a *AppView) getLists(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cur, err := parseTimeCursor(hr.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	purposes := map[string]bool{}
	for _, p := range hr.URL.Query()["purposes"] {
		switch p {
		case "modlist", "curatelist", "referencelist":
			purposes["app.bsky.graph.defs#"+p] = true
		default:
			purposes[p] = true
		}
	}
	out := struct {
		Cursor string      `json:"cursor,omitempty"`
		Lists  []*listView `json:"lists"`
	}{Lists: []*listView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		did, err := r.actorParam(hr, "actor")
		if err != nil {
			return err
		}
		var ls []*listRow
		err = r.rows(`SELECT `+listColumns+` FROM lists WHERE author = ? AND (indexed_at, uri) < (?, ?)
			ORDER BY indexed_at DESC, uri DESC LIMIT ?`, []any{did, cur.at, cur.uri, limit}, func(rows *sql.Rows) error {
			l, err := scanList(rows)
			ls = append(ls, l)
			return err
		})
		if err != nil {
			return err
		}
		if err := r.loadProfiles([]string{did}); err != nil {
			return err
		}
		if !r.actors[did].active() || r.blocked(did) {
			return nil
		}
		for _, l := range ls {
			if len(purposes) == 0 || purposes[l.purpose] {
				out.Lists = append(out.Lists, r.listView(l))
			}
		}
		if len(ls) == limit {
			last := ls[len(ls)-1]
			out.Cursor = timeCursor{at: last.indexedAt, uri: last.uri}.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

type listItemView struct {
	URI     string       `json:"uri"`
	Subject *profileView `json:"subject"`
}

func (a *AppView) getList(hr *http.Request, viewer string) (any, error) {
	uri, err := uriParam(hr, "list")
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cur, err := parseTimeCursor(hr.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	out := struct {
		Cursor string          `json:"cursor,omitempty"`
		List   *listView       `json:"list"`
		Items  []*listItemView `json:"items"`
	}{Items: []*listItemView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		l, err := scanList(r.tx.QueryRowContext(r.ctx, `SELECT `+listColumns+` FROM lists WHERE uri = ?`, uri))
		if err == sql.ErrNoRows {
			return notFound("NotFound", "List not found")
		}
		if err != nil {
			return err
		}
		type item struct {
			uri, subject string
			key          timeCursor
		}
		var items []item
		err = r.rows(`SELECT uri, subject, sort_at FROM list_items WHERE list = ? AND (sort_at, uri) < (?, ?)
			ORDER BY sort_at DESC, uri DESC LIMIT ?`, []any{uri, cur.at, cur.uri, limit}, func(rows *sql.Rows) error {
			var it item
			if err := rows.Scan(&it.uri, &it.subject, &it.key.at); err != nil {
				return err
			}
			it.key.uri = it.uri
			items = append(items, it)
			return nil
		})
		if err != nil {
			return err
		}
		dids := []string{l.author}
		for _, it := range items {
			dids = append(dids, it.subject)
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		out.List = r.listView(l)
		for _, it := range items {
			if r.actors[it.subject] != nil {
				out.Items = append(out.Items, &listItemView{URI: it.uri, Subject: r.profile(it.subject)})
			}
		}
		if len(items) == limit {
			out.Cursor = items[len(items)-1].key.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
