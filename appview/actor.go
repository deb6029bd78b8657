package appview

import (
	"database/sql"
	"net/http"
	"strings"

	"github.com/aerie-social/aerie/node/xrpc"
)

// maxGetProfiles is getProfiles' limit on actors.
const maxGetProfiles = 25

func (a *AppView) getProfile(hr *http.Request, viewer string) (any, error) {
	var out *profileView
	err := a.read(hr.Context(), viewer, func(r *req) error {
		did, err := r.actorParam(hr, "actor")
		if err != nil {
			return err
		}
		if err := r.loadProfiles([]string{did}); err != nil {
			return err
		}
		ar := r.actors[did]
		if ar == nil {
			return xrpc.InvalidRequest("Profile not found")
		}
		if err := actorStatusError(ar); err != nil {
			return err
		}
		// A blocked profile is still shown, with viewer.blocking/blockedBy set, so the
		// app can say why there is nothing else (§11.4).
		out = r.profileDetailed(did)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *AppView) getProfiles(hr *http.Request, viewer string) (any, error) {
	raw := hr.URL.Query()["actors"]
	if len(raw) > maxGetProfiles {
		return nil, xrpc.InvalidRequest("at most %d actors", maxGetProfiles)
	}
	out := struct {
		Profiles []*profileView `json:"profiles"`
	}{Profiles: []*profileView{}}
	err := a.read(hr.Context(), viewer, func(r *req) error {
		var dids []string
		for _, s := range raw {
			d, err := r.resolveActor(s)
			if err != nil {
				return err
			}
			if d != "" {
				dids = append(dids, d)
			}
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		for _, d := range dids {
			if r.actors[d].active() {
				out.Profiles = append(out.Profiles, r.profileDetailed(d))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// graphList serves getFollows and getFollowers: q selects (did, sort_at, uri) of one page.
func (a *AppView) graphList(hr *http.Request, viewer, key, q string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cur, err := parseTimeCursor(hr.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	var out map[string]any
	err = a.read(hr.Context(), viewer, func(r *req) error {
		did, err := r.actorParam(hr, "actor")
		if err != nil {
			return err
		}
		var dids []string
		var last timeCursor
		err = r.rows(q, []any{did, cur.at, cur.uri, limit}, func(rows *sql.Rows) error {
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
		if err := r.loadProfiles(append(dids, did)); err != nil {
			return err
		}
		if !r.actors[did].active() {
			return actorStatusError(r.actors[did])
		}
		out = map[string]any{"subject": r.profile(did), key: r.profiles(dids)}
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

func (a *AppView) getFollows(hr *http.Request, viewer string) (any, error) {
	return a.graphList(hr, viewer, "follows", `SELECT subject, sort_at, uri FROM follows
		WHERE author = ? AND (sort_at, uri) < (?, ?) ORDER BY sort_at DESC, uri DESC LIMIT ?`)
}

func (a *AppView) getFollowers(hr *http.Request, viewer string) (any, error) {
	return a.graphList(hr, viewer, "followers", `SELECT author, sort_at, uri FROM follows
		WHERE subject = ? AND (sort_at, uri) < (?, ?) ORDER BY sort_at DESC, uri DESC LIMIT ?`)
}

// ftsQuery turns user input into an FTS5 query of prefix-matched terms, quoted so that no
// input is FTS5 syntax. It returns "" when nothing searchable is left.
func ftsQuery(q string, prefix bool) string {
	var terms []string
	for _, f := range strings.Fields(q) {
		f = strings.Trim(f, `"@#*():^-+`)
		if f == "" {
			continue
		}
		t := `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
		if prefix {
			t += "*"
		}
		terms = append(terms, t)
		if len(terms) == 8 {
			break
		}
	}
	return strings.Join(terms, " ")
}

// searchActorDIDs returns the DIDs of active actors matching q, best first.
func (r *req) searchActorDIDs(q string, limit, offset int) ([]string, error) {
	fq := ftsQuery(q, true)
	if fq == "" {
		return nil, nil
	}
	var dids []string
	err := r.rows(`SELECT a.did FROM actors_fts f JOIN actors a ON a.rowid = f.rowid
		WHERE actors_fts MATCH ? AND a.status IS NULL
		ORDER BY f.rank, a.followers_count DESC LIMIT ? OFFSET ?`, []any{fq, limit, offset}, func(rows *sql.Rows) error {
		var d string
		if err := rows.Scan(&d); err != nil {
			return err
		}
		dids = append(dids, d)
		return nil
	})
	return dids, err
}

func searchTerm(hr *http.Request) string {
	if q := hr.URL.Query().Get("q"); q != "" {
		return q
	}
	return hr.URL.Query().Get("term")
}

func (a *AppView) searchActors(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 25, 100)
	if err != nil {
		return nil, err
	}
	offset, err := offsetCursor(hr)
	if err != nil {
		return nil, err
	}
	out := struct {
		Cursor string         `json:"cursor,omitempty"`
		Actors []*profileView `json:"actors"`
	}{Actors: []*profileView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		dids, err := r.searchActorDIDs(searchTerm(hr), limit, offset)
		if err != nil {
			return err
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		out.Actors = r.profiles(dids)
		if len(dids) == limit {
			out.Cursor = itoa(offset + limit)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *AppView) searchActorsTypeahead(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 10, 100)
	if err != nil {
		return nil, err
	}
	out := struct {
		Actors []*profileView `json:"actors"`
	}{Actors: []*profileView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		dids, err := r.searchActorDIDs(searchTerm(hr), limit, 0)
		if err != nil {
			return err
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		for _, d := range dids {
			if r.actors[d].active() && !r.blocked(d) {
				out.Actors = append(out.Actors, r.profileBasic(d))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// getSuggestions suggests the most-followed local-index accounts the viewer does not
// follow yet: simple, and good enough for a small community.
func (a *AppView) getSuggestions(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	offset, err := offsetCursor(hr)
	if err != nil {
		return nil, err
	}
	out := struct {
		Cursor string         `json:"cursor,omitempty"`
		Actors []*profileView `json:"actors"`
	}{Actors: []*profileView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		var dids []string
		err := r.rows(`SELECT did FROM actors a WHERE status IS NULL AND handle IS NOT NULL AND did != ?1
			AND NOT EXISTS (SELECT 1 FROM follows f WHERE f.author = ?1 AND f.subject = a.did)
			ORDER BY followers_count DESC, did LIMIT ?2 OFFSET ?3`, []any{viewer, limit, offset}, func(rows *sql.Rows) error {
			var d string
			if err := rows.Scan(&d); err != nil {
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
		for _, d := range dids {
			if r.actors[d].active() && !r.blocked(d) && !r.muted(d) {
				out.Actors = append(out.Actors, r.profile(d))
			}
		}
		if len(dids) == limit {
			out.Cursor = itoa(offset + limit)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
