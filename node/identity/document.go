package identity

import (
	"slices"
	"sort"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// JSON-LD contexts of an atproto DID document. The two suites say which curve a
// Multikey is on; plc.directory adds the one for each key it lists.
const (
	contextDID       = "https://www.w3.org/ns/did/v1"
	contextMultikey  = "https://w3id.org/security/multikey/v1"
	contextK256Suite = "https://w3id.org/security/suites/secp256k1-2019/v1"
	contextP256Suite = "https://w3id.org/security/suites/ecdsa-2019/v1"
)

// Document is a DID document as plc.directory renders it and as a did:web host serves
// it at /.well-known/did.json.
type Document struct {
	Context            []string             `json:"@context"`
	ID                 syntax.DID           `json:"id"`
	AlsoKnownAs        []string             `json:"alsoKnownAs,omitempty"`
	VerificationMethod []VerificationMethod `json:"verificationMethod"`
	Service            []DocumentService    `json:"service"`
}

// VerificationMethod is a public key in a Document, as a Multikey.
type VerificationMethod struct {
	ID                 string `json:"id"`
	Type               string `json:"type"`
	Controller         string `json:"controller"`
	PublicKeyMultibase string `json:"publicKeyMultibase"`
}

// DocumentService is a service endpoint in a Document. Its ID is "#<name>".
type DocumentService struct {
	ID              string `json:"id"`
	Type            string `json:"type"`
	ServiceEndpoint string `json:"serviceEndpoint"`
}

// Document renders the DID document for st. Verification methods and services come in
// name order (Go maps have none), except that "atproto" and "atproto_pds" come first, as
// they do in every document the reference directory serves.
func (st State) Document() Document {
	doc := Document{
		Context:            []string{contextDID, contextMultikey},
		ID:                 st.DID,
		AlsoKnownAs:        slices.Clone(st.AlsoKnownAs),
		VerificationMethod: []VerificationMethod{},
		Service:            []DocumentService{},
	}
	for _, name := range sortedFirst(st.VerificationMethods, "atproto") {
		key := st.VerificationMethods[name]
		// An unparseable key is still listed, as the reference does; resolvers skip it.
		pub, _ := atcrypto.ParsePublicDIDKey(key)
		switch pub.(type) {
		case *atcrypto.PublicKeyK256:
			doc.addContext(contextK256Suite)
		case *atcrypto.PublicKeyP256:
			doc.addContext(contextP256Suite)
		}
		doc.VerificationMethod = append(doc.VerificationMethod, VerificationMethod{
			ID:                 st.DID.String() + "#" + name,
			Type:               "Multikey",
			Controller:         st.DID.String(),
			PublicKeyMultibase: strings.TrimPrefix(key, didKeyPrefix),
		})
	}
	for _, name := range sortedFirst(st.Services, "atproto_pds") {
		s := st.Services[name]
		doc.Service = append(doc.Service, DocumentService{ID: "#" + name, Type: s.Type, ServiceEndpoint: s.Endpoint})
	}
	return doc
}

func (doc *Document) addContext(c string) {
	if !slices.Contains(doc.Context, c) {
		doc.Context = append(doc.Context, c)
	}
}

// sortedFirst returns m's keys sorted, with first (if present) moved to the front.
func sortedFirst[V any](m map[string]V, first string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == first) != (keys[j] == first) {
			return keys[i] == first
		}
		return keys[i] < keys[j]
	})
	return keys
}

// ServiceDID returns the node's service DID, did:web:<hostname>. A port (allowed by
// did:web only for localhost) is percent-encoded as %3A.
func ServiceDID(hostname string) (syntax.DID, error) {
	return syntax.ParseDID("did:web:" + strings.ReplaceAll(strings.ToLower(hostname), ":", "%3A"))
}

// ServiceDIDDocument returns the DID document a node serves at /.well-known/did.json for
// its service DID did:web:<hostname>: key is the service signing key (#atproto), and
// publicURL (https://host, no path) is the endpoint of #atproto_pds, #bsky_appview and
// #bsky_notif, since one Aerie process is all three (atproto reference §13).
func ServiceDIDDocument(hostname, publicURL string, key atcrypto.PublicKey) (Document, error) {
	did, err := ServiceDID(hostname)
	if err != nil {
		return Document{}, err
	}
	endpoint := strings.TrimSuffix(publicURL, "/")
	st := State{
		DID:                 did,
		VerificationMethods: map[string]string{"atproto": key.DIDKey()},
		Services: map[string]Service{
			"atproto_pds":  {Type: "AtprotoPersonalDataServer", Endpoint: endpoint},
			"bsky_appview": {Type: "BskyAppView", Endpoint: endpoint},
			"bsky_notif":   {Type: "BskyNotificationService", Endpoint: endpoint},
		},
	}
	return st.Document(), nil
}
