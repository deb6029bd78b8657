package node

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/identity"
)

// plcDirectory is what account creation needs of a PLC directory: the embedded one in
// process (identity.Directory) or a remote one over HTTP (identity.PLCClient).
type plcDirectory interface {
	Submit(ctx context.Context, did syntax.DID, op *identity.Operation) error
}

// embeddedPLC adapts the in-process directory to documentDirectory.
type embeddedPLC struct{ *identity.Directory }

func (e embeddedPLC) Document(ctx context.Context, did syntax.DID) (json.RawMessage, error) {
	st, err := e.State(ctx, did)
	if err != nil {
		return nil, err
	}
	return json.Marshal(st.Document())
}

// documentDirectory also serves DID documents.
type documentDirectory interface {
	plcDirectory
	Document(ctx context.Context, did syntax.DID) (json.RawMessage, error)
}

// plcRotationKey returns the server's PLC rotation key, generated on first start and kept
// in aerie.sqlite: it lets this PDS sign identity updates for its accounts.
func (n *Node) plcRotationKey(ctx context.Context) (*atcrypto.PrivateKeyK256, error) {
	fresh, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, fmt.Errorf("generate PLC rotation key: %w", err)
	}
	raw, err := n.serviceSecretOr(ctx, "plc_rotation_k256", fresh.Bytes())
	if err != nil {
		return nil, err
	}
	key, err := atcrypto.ParsePrivateBytesK256(raw)
	if err != nil {
		return nil, fmt.Errorf("parse stored PLC rotation key: %w", err)
	}
	return key, nil
}
