package appview

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/aerie-social/aerie/node/xrpc"
)

// notificationFilter leaves out notifications from accounts the viewer (?1) blocks, is
// blocked by, or muted (§11.4): applied when reading, so a later block or mute hides
// what was indexed before it.
const notificationFilter = `n.recipient = ?1
	AND NOT EXISTS (SELECT 1 FROM mutes m WHERE m.viewer = ?1 AND m.subject = n.author)
	AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.author = ?1 AND b.subject = n.author)
	AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.author = n.author AND b.subject = ?1)`

// notification is app.bsky.notification.listNotifications#notification.
type notification struct {
	URI           string          `json:"uri"`
	CID           string          `json:"cid"`
	Author        *profileView    `json:"author"`
	Reason        string          `json:"reason"`
	ReasonSubject string          `json:"reasonSubject,omitempty"`
	Record        json.RawMessage `json:"record"`
	IsRead        bool            `json:"isRead"`
	IndexedAt     string          `json:"indexedAt"`
	Labels        []label         `json:"labels,omitempty"`
}

func (a *AppView) listNotifications(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	var before int64 = 1<<63 - 1
	if s := hr.URL.Query().Get("cursor"); s != "" {
		if before, err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, xrpc.InvalidRequest("malformed cursor")
		}
	}
	reasons := hr.URL.Query()["reasons"]
	out := struct {
		Cursor        string          `json:"cursor,omitempty"`
		Notifications []*notification `json:"notifications"`
		SeenAt        string          `json:"seenAt,omitempty"`
	}{Notifications: []*notification{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		var seenAt int64
		err := r.tx.QueryRowContext(r.ctx, `SELECT coalesce((SELECT seen_at FROM actors WHERE did = ?), 0)`, viewer).Scan(&seenAt)
		if err != nil {
			return err
		}
		if seenAt > 0 {
			out.SeenAt = fmtTime(seenAt)
		}
		q := `SELECT n.id, n.uri, n.cid, n.author, n.reason, coalesce(n.reason_subject, ''), n.record, n.indexed_at
			FROM notifications n WHERE ` + notificationFilter + ` AND n.id < ?2`
		args := []any{viewer, before}
		if len(reasons) > 0 {
			q += ` AND n.reason IN (` + strings.TrimSuffix(strings.Repeat("?,", len(reasons)), ",") + `)`
			for _, x := range reasons {
				args = append(args, x)
			}
		}
		q += fmt.Sprintf(` ORDER BY n.id DESC LIMIT %d`, limit)
		var rs []notificationRow
		err = r.rows(q, args, func(rows *sql.Rows) error {
			n := &notification{}
			var x notificationRow
			var rec string
			if err := rows.Scan(&x.id, &n.URI, &n.CID, &x.did, &n.Reason, &n.ReasonSubject, &rec, &x.at); err != nil {
				return err
			}
			n.Record = json.RawMessage(rec)
			n.IndexedAt = fmtTime(x.at)
			n.IsRead = x.at <= seenAt
			x.n = n
			rs = append(rs, x)
			return nil
		})
		if err != nil {
			return err
		}
		if err := r.rebuildPlainRecords(rs); err != nil {
			return err
		}
		dids := make([]string, len(rs))
		for i, x := range rs {
			dids[i] = x.did
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		for _, x := range rs {
			// List blocks are not in notificationFilter; an empty record found no row to
			// rebuild it from.
			if !r.actors[x.did].active() || r.blocked(x.did) || len(x.n.Record) == 0 {
				continue
			}
			x.n.Author = r.profile(x.did)
			out.Notifications = append(out.Notifications, x.n)
		}
		if len(rs) == limit {
			out.Cursor = strconv.FormatInt(rs[len(rs)-1].id, 10)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *AppView) getUnreadCount(hr *http.Request, viewer string) (any, error) {
	out := struct {
		Count int64 `json:"count"`
	}{}
	err := a.read(hr.Context(), viewer, func(r *req) error {
		return r.tx.QueryRowContext(r.ctx, `SELECT count(*) FROM notifications n WHERE `+notificationFilter+`
			AND n.indexed_at > coalesce((SELECT seen_at FROM actors WHERE did = ?1), 0)`, viewer).Scan(&out.Count)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *AppView) updateSeen(hr *http.Request, viewer string) (any, error) {
	var in struct {
		SeenAt string `json:"seenAt"`
	}
	if err := decodeBody(hr, &in); err != nil {
		return nil, err
	}
	dt, err := xrpc.ParseDatetime(in.SeenAt)
	if err != nil {
		return nil, xrpc.InvalidRequest("seenAt must be a datetime")
	}
	// A client clock ahead of ours must not mark notifications read before they exist.
	seen := min(dt.Time().UnixMicro(), a.now().UnixMicro())
	err = a.db.Write(hr.Context(), func(tx *sql.Tx) error {
		_, err := tx.ExecContext(hr.Context(), `INSERT INTO actors (did, seen_at) VALUES (?1, ?2)
			ON CONFLICT (did) DO UPDATE SET seen_at = max(seen_at, ?2)`, viewer, seen)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update seen of %s: %w", viewer, err)
	}
	return nil, nil
}

// notificationRow is a notifications row being listed.
type notificationRow struct {
	id  int64
	n   *notification
	at  int64
	did string
}

// rebuildPlainRecords fills in the records the index stored empty (plainRecord) from the
// rows of the likes, reposts and follows that caused them. A row that is gone (it never
// is: deleting a record deletes its notifications) leaves the record empty.
func (r *req) rebuildPlainRecords(rs []notificationRow) error {
	byURI := map[string]*notification{}
	uris := map[string][]string{}
	for _, x := range rs {
		if len(x.n.Record) == 0 {
			c := uriCollection(x.n.URI)
			byURI[x.n.URI] = x.n
			uris[c] = append(uris[c], x.n.URI)
		}
	}
	for _, c := range []string{colLike, colRepost, colFollow} {
		if len(uris[c]) == 0 {
			continue
		}
		q := `SELECT uri, created_at, subject, subject_cid FROM ` + tableOf(c) + ` WHERE uri IN (%s)`
		if c == colFollow {
			q = `SELECT uri, created_at, subject, '' FROM follows WHERE uri IN (%s)`
		}
		err := r.inQuery(q, nil, uris[c], func(rows *sql.Rows) error {
			var uri, created, subject, subjectCID string
			if err := rows.Scan(&uri, &created, &subject, &subjectCID); err != nil {
				return err
			}
			js, err := dataJSON(plainRecordData(c, created, subject, subjectCID))
			if err != nil {
				return err
			}
			byURI[uri].Record = js
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
