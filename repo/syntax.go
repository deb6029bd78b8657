package repo

// Hand-written checks of the identifiers every record carries. They decide exactly as
// indigo's syntax.ParseNSID and syntax.ParseRecordKey do (FuzzSyntaxMatchesIndigo holds
// them to it), without the regular expressions: those cost the indexer several percent
// of its time, as each record's $type, collection and references are checked.

// maxNSIDLength is the longest NSID atproto allows.
const maxNSIDLength = 317

// ValidNSID reports whether s is an NSID: reversed-domain segments and a name, at least
// three in all, such as app.bsky.feed.post.
func ValidNSID(s string) bool {
	if s == "" || len(s) > maxNSIDLength {
		return false
	}
	segments, start := 0, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			continue
		}
		if !nsidSegment(s[start:i], segments == 0, i == len(s)) {
			return false
		}
		segments++
		start = i + 1
	}
	return segments >= 3
}

// nsidSegment checks one dot-separated part of an NSID: 1 to 63 characters; the name
// (last) is a letter then letters and digits; domain parts are letters, digits and
// inner hyphens, and the first of them starts with a letter.
func nsidSegment(seg string, first, name bool) bool {
	if seg == "" || len(seg) > 63 {
		return false
	}
	if name {
		if !isLetter(seg[0]) {
			return false
		}
		for i := 1; i < len(seg); i++ {
			if !isLetter(seg[i]) && !isDigit(seg[i]) {
				return false
			}
		}
		return true
	}
	if first && !isLetter(seg[0]) {
		return false
	}
	if seg[0] == '-' || seg[len(seg)-1] == '-' {
		return false
	}
	for i := 0; i < len(seg); i++ {
		if c := seg[i]; !isLetter(c) && !isDigit(c) && c != '-' {
			return false
		}
	}
	return true
}

// ValidRecordKey reports whether s is a record key: 1 to 512 of A-Z a-z 0-9 . - _ : ~,
// and neither "." nor "..".
func ValidRecordKey(s string) bool {
	if s == "" || len(s) > 512 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isLetter(c), isDigit(c), c == '.', c == '-', c == '_', c == ':', c == '~':
		default:
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
