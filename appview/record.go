package appview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/repo"
)

// recordJSON renders rec as repo.RecordJSON renders its CBOR (the form getRecord serves):
// rec.Data is what RecordJSON would decode, and the indexer has it parsed already; decoding
// the CBOR a second time was most of the cost of the conversion.
func recordJSON(rec *repo.Record) ([]byte, error) { return dataJSON(rec.Data) }

// dataJSON renders record data (as atdata parses it) the way repo.RecordJSON does.
func dataJSON(data map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as RecordJSON: the author's <, > and & stay as written
	if err := enc.Encode(data); err != nil {
		return nil, fmt.Errorf("encode record JSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// A like, repost or follow record nearly always holds nothing but $type, createdAt and
// its subject, all of which its row in likes, reposts or follows keeps. Its notifications
// then store an empty record, and listNotifications renders it from that row
// (plainRecord): those were most notifications, and their JSON a third of the index.

// plainRecord reports whether m, a record of collection, holds exactly what
// plainRecordData rebuilds from its row, so the rebuilt JSON is byte for byte the record's.
func plainRecord(collection string, m map[string]any) bool {
	created, ok := m["createdAt"].(string)
	if len(m) != 3 || !ok {
		return false
	}
	if _, err := syntax.ParseDatetimeLenient(created); err != nil {
		return false // the row holds the indexing time instead
	}
	switch collection {
	case colLike, colRepost:
		ref, ok := m["subject"].(map[string]any)
		if !ok || len(ref) != 2 {
			return false
		}
		_, _, ok = readStrongRef(ref)
		return ok
	case colFollow:
		_, ok := didOf(m, "subject")
		return ok
	}
	return false
}

// plainRecordData rebuilds a plain record (plainRecord) of collection from its row's
// fields; subjectCID is unused for a follow.
func plainRecordData(collection, createdAt, subject, subjectCID string) map[string]any {
	m := map[string]any{"$type": collection, "createdAt": createdAt, "subject": subject}
	if collection != colFollow {
		m["subject"] = map[string]any{"uri": subject, "cid": subjectCID}
	}
	return m
}

// Record collections the indexer understands (atproto-reference §10).
const (
	colPost       = "app.bsky.feed.post"
	colLike       = "app.bsky.feed.like"
	colRepost     = "app.bsky.feed.repost"
	colFollow     = "app.bsky.graph.follow"
	colBlock      = "app.bsky.graph.block"
	colProfile    = "app.bsky.actor.profile"
	colList       = "app.bsky.graph.list"
	colListItem   = "app.bsky.graph.listitem"
	colListBlock  = "app.bsky.graph.listblock"
	colThreadgate = "app.bsky.feed.threadgate"
	colPostgate   = "app.bsky.feed.postgate"
	colGenerator  = "app.bsky.feed.generator"
)

// Media kinds of a post, for getAuthorFeed's filters.
const (
	mediaNone     = 0
	mediaImages   = 1
	mediaVideo    = 2
	mediaExternal = 3
)

// The values below walk a record parsed by atdata (map[string]any of string, int64, bool,
// []any, map[string]any, atdata.CIDLink, *atdata.Blob, atdata.Bytes). Records come from
// untrusted repos, so every accessor tolerates a missing key or a wrong type.

func mapOf(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

func strOf(m map[string]any, key string) string {
	v, _ := m[key].(string)
	return v
}

func listOf(m map[string]any, key string) []any {
	v, _ := m[key].([]any)
	return v
}

// blobCID returns the CID of a blob value, or "".
func blobCID(v any) string {
	switch b := v.(type) {
	case *atdata.Blob:
		if b != nil && b.Ref.IsDefined() {
			return b.Ref.String()
		}
	case atdata.Blob:
		if b.Ref.IsDefined() {
			return b.Ref.String()
		}
	}
	return ""
}

// readStrongRef reads a com.atproto.repo.strongRef: a valid AT-URI and a non-empty CID.
func readStrongRef(m map[string]any) (uri, cid string, ok bool) {
	if m == nil {
		return "", "", false
	}
	uri, cid = strOf(m, "uri"), strOf(m, "cid")
	if cid == "" {
		return "", "", false
	}
	if !validATURI(uri) {
		return "", "", false
	}
	return uri, cid, true
}

// maxATURILength is the longest AT-URI atproto allows.
const maxATURILength = 8192

// validATURI decides as syntax.ParseATURI does (FuzzValidATURI holds it to that). URIs
// with a DID authority, which is what records reference, are checked by hand; those
// naming a handle go through ParseATURI, whose regular expressions cost the indexer
// about 3% of its time.
func validATURI(s string) bool {
	rest, ok := strings.CutPrefix(s, "at://")
	if !ok || len(s) > maxATURILength {
		return false
	}
	authority, path, hasPath := strings.Cut(rest, "/")
	if !isDID(authority) {
		_, err := syntax.ParseATURI(s)
		return err == nil
	}
	if !hasPath {
		return true
	}
	collection, rkey, hasKey := strings.Cut(path, "/")
	if !repo.ValidNSID(collection) {
		return false
	}
	return !hasKey || repo.ValidRecordKey(rkey)
}

// didOf reads a DID field.
func didOf(m map[string]any, key string) (string, bool) {
	d := strOf(m, key)
	return d, isDID(d)
}

// maxDIDLength is the longest DID atproto allows.
const maxDIDLength = 2048

// isDID reports whether s has the DID syntax atproto allows (did:method:id, §2). It is
// syntax.ParseDID without the regular expression, which cost the indexer about 3% of its
// time: it runs several times for every record.
func isDID(s string) bool {
	rest, ok := strings.CutPrefix(s, "did:")
	if !ok || len(s) > maxDIDLength {
		return false
	}
	method, id, ok := strings.Cut(rest, ":")
	if !ok || method == "" || id == "" {
		return false
	}
	for i := 0; i < len(method); i++ {
		if method[i] < 'a' || method[i] > 'z' {
			return false
		}
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == ':', c == '%':
		default:
			return false
		}
	}
	last := id[len(id)-1]
	return last != ':' && last != '%'
}

// uriAuthority returns the DID of an at:// URI, or "" when the authority is a handle or
// not a DID. Only the authority is checked: the URIs it sees were parsed where they came in.
func uriAuthority(uri string) string {
	rest, ok := strings.CutPrefix(uri, "at://")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if !isDID(rest) {
		return ""
	}
	return rest
}

// uriCollection returns the collection of an at:// URI, or "".
func uriCollection(uri string) string {
	rest, ok := strings.CutPrefix(uri, "at://")
	if !ok {
		return ""
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// createdAtOf returns the record's createdAt as written and as a time; a missing or
// malformed value yields now, so the record still sorts somewhere sensible.
func createdAtOf(m map[string]any, now time.Time) (string, time.Time) {
	raw := strOf(m, "createdAt")
	if dt, err := syntax.ParseDatetimeLenient(raw); err == nil {
		return raw, dt.Time()
	}
	return now.UTC().Format(syntax.AtprotoDatetimeLayout), now
}

// sortAt is min(createdAt, indexedAt) in microseconds (§11.1): a post dated in the future
// cannot pin itself to the top of feeds.
func sortAt(created, indexed time.Time) int64 {
	if created.After(indexed) {
		return indexed.UnixMicro()
	}
	return created.UnixMicro()
}

// post is what the index keeps from an app.bsky.feed.post record.
type post struct {
	text                string
	replyRoot, replyPar string
	replyRootCID        string
	quoteURI            string
	media               int
	langs               string
	mentions            []string
}

// parsePost reads the fields of a post record the index needs. ok is false for a record
// the index must ignore (a malformed reply reference).
func parsePost(m map[string]any) (p post, ok bool) {
	p.text = strOf(m, "text")
	if r := mapOf(m, "reply"); r != nil {
		root, rootCID, ok1 := readStrongRef(mapOf(r, "root"))
		parent, _, ok2 := readStrongRef(mapOf(r, "parent"))
		if !ok1 || !ok2 {
			return p, false
		}
		p.replyRoot, p.replyRootCID, p.replyPar = root, rootCID, parent
	}
	if e := mapOf(m, "embed"); e != nil {
		switch strOf(e, "$type") {
		case "app.bsky.embed.images", "app.bsky.embed.gallery":
			p.media = mediaImages
		case "app.bsky.embed.video":
			p.media = mediaVideo
		case "app.bsky.embed.external":
			p.media = mediaExternal
		case "app.bsky.embed.record":
			p.quoteURI, _, _ = readStrongRef(mapOf(e, "record"))
		case "app.bsky.embed.recordWithMedia":
			p.quoteURI, _, _ = readStrongRef(mapOf(mapOf(e, "record"), "record"))
			switch strOf(mapOf(e, "media"), "$type") {
			case "app.bsky.embed.images", "app.bsky.embed.gallery":
				p.media = mediaImages
			case "app.bsky.embed.video":
				p.media = mediaVideo
			case "app.bsky.embed.external":
				p.media = mediaExternal
			}
		}
	}
	var langs []string
	for _, l := range listOf(m, "langs") {
		if s, ok := l.(string); ok {
			langs = append(langs, s)
		}
	}
	p.langs = strings.Join(langs, ",")
	seen := map[string]bool{}
	for _, f := range listOf(m, "facets") {
		fm, _ := f.(map[string]any)
		for _, feat := range listOf(fm, "features") {
			ft, _ := feat.(map[string]any)
			if strOf(ft, "$type") != "app.bsky.richtext.facet#mention" {
				continue
			}
			if d, ok := didOf(ft, "did"); ok && !seen[d] {
				seen[d] = true
				p.mentions = append(p.mentions, d)
			}
		}
	}
	return p, true
}
