package node

import (
	"context"
	"encoding/json"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// didDocument returns the DID document of a hosted account, which clients read their PDS
// URL from after login. It is nil (and left out of responses) when the directory cannot
// produce it; the caller's request still succeeds.
func (n *Node) didDocument(ctx context.Context, did string) map[string]any {
	d, err := syntax.ParseDID(did)
	if err != nil || d.Method() != "plc" {
		return nil
	}
	raw, err := n.plc.Document(ctx, d)
	if err != nil {
		n.log.WarnContext(ctx, "cannot read DID document", "did", did, "err", err)
		return nil
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil
	}
	return doc
}
