package appview

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Neighbours returns the accounts that accounts interact with, as the index knows: whom
// they follow, and the authors of posts they liked, reposted or replied to (thread roots
// and parents). It is the crawler's interest set at startup: a community's neighbourhood,
// not the whole network. The result has no duplicates and may include accounts themselves.
func (a *AppView) Neighbours(ctx context.Context, accounts []syntax.DID) ([]syntax.DID, error) {
	seen := map[syntax.DID]bool{}
	var out []syntax.DID
	add := func(s string) {
		did, err := syntax.ParseDID(s)
		if err != nil {
			u, uerr := syntax.ParseATURI(s)
			if uerr != nil {
				return
			}
			if did, err = u.Authority().AsDID(); err != nil {
				return
			}
		}
		if !seen[did] {
			seen[did] = true
			out = append(out, did)
		}
	}
	err := a.db.Read(ctx, func(tx *sql.Tx) error {
		for _, acct := range accounts {
			rows, err := tx.QueryContext(ctx, `SELECT subject FROM follows WHERE author = ?1
				UNION SELECT subject FROM likes WHERE author = ?1
				UNION SELECT subject FROM reposts WHERE author = ?1
				UNION SELECT reply_root FROM posts WHERE author = ?1 AND reply_root IS NOT NULL
				UNION SELECT reply_parent FROM posts WHERE author = ?1 AND reply_parent IS NOT NULL`, acct.String())
			if err != nil {
				return err
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					rows.Close()
					return err
				}
				add(s)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	return out, nil
}
