package appview

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Postgates (atproto-reference §10): the author of a post may detach quotes of it
// (detachedEmbeddingUris) or forbid quoting altogether (embeddingRules #disableRule). A
// detached quote keeps its record but its embed shows as #viewDetached, and it counts in
// neither quoteCount nor getQuotes. A disableRule applies to every quote by someone else,
// those made before it too: the flags are a function of the current postgate, so replays,
// reindexes and records arriving out of order all give the same index.

// postgateRules is what the index reads from a postgate record.
type postgateRules struct {
	detached []string
	disabled bool
}

// parsePostgate reads a postgate record's JSON; unknown rules are ignored (open union).
func parsePostgate(js []byte) *postgateRules {
	var rec struct {
		Detached []string `json:"detachedEmbeddingUris"`
		Rules    []struct {
			Type string `json:"$type"`
		} `json:"embeddingRules"`
	}
	if json.Unmarshal(js, &rec) != nil {
		return &postgateRules{}
	}
	g := &postgateRules{detached: rec.Detached}
	for _, r := range rec.Rules {
		if r.Type == "app.bsky.feed.postgate#disableRule" {
			g.disabled = true
		}
	}
	return g
}

// detaches reports whether the gate of post detaches the quote quoting by author. A nil
// gate detaches nothing; a post's author may always quote it.
func (g *postgateRules) detaches(post, quoting, author string) bool {
	if g == nil {
		return false
	}
	return slices.Contains(g.detached, quoting) || (g.disabled && author != uriAuthority(post))
}

// postgate returns the rules of post's postgate, or nil when it has none.
func (ix *indexTx) postgate(post string) (*postgateRules, error) {
	var raw string
	err := ix.row(`SELECT record FROM postgates WHERE post = ?`, []any{post}, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parsePostgate([]byte(raw)), nil
}

// applyPostgate recomputes the flags and quote count that post's gate (nil: none)
// decides: the post's embedding_disabled, each quote's embed_detached, the quote count.
func (ix *indexTx) applyPostgate(post string, gate *postgateRules) error {
	disabled := gate != nil && gate.disabled
	if _, err := ix.exec(`UPDATE posts SET embedding_disabled = ? WHERE uri = ? AND embedding_disabled != ?`, disabled, post, disabled); err != nil {
		return err
	}
	type quote struct {
		uri, author string
		detached    bool
	}
	var quotes []quote
	s, err := ix.stmt(`SELECT uri, author, embed_detached FROM posts WHERE quote_uri = ?`)
	if err != nil {
		return err
	}
	rows, err := s.QueryContext(ix.ctx, post)
	if err != nil {
		return fmt.Errorf("list quotes of %s: %w", post, err)
	}
	for rows.Next() {
		var q quote
		if err := rows.Scan(&q.uri, &q.author, &q.detached); err != nil {
			rows.Close()
			return fmt.Errorf("list quotes of %s: %w", post, err)
		}
		quotes = append(quotes, q)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("list quotes of %s: %w", post, err)
	}
	for _, q := range quotes {
		if d := gate.detaches(post, q.uri, q.author); d != q.detached {
			if _, err := ix.exec(`UPDATE posts SET embed_detached = ? WHERE uri = ?`, d, q.uri); err != nil {
				return err
			}
			ix.t.post(q.uri)
		}
	}
	_, err = ix.exec(`UPDATE posts SET quote_count = (SELECT count(*) FROM posts p WHERE p.quote_uri = ?1 AND p.embed_detached = 0)
		WHERE uri = ?1`, post)
	ix.t.post(post)
	return err
}
