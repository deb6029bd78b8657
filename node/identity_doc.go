package node

import "context"

// didDocument returns the DID document clients read their PDS URL from after login. It
// is nil (and left out of responses) until the identity resolver is wired in.
func (n *Node) didDocument(ctx context.Context, did string) map[string]any {
	return nil
}
