package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/appview"
	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/repo"
)

// feedgenTimeout bounds one call to a feed generator service: the app waits on getFeed,
// and a generator slower than this is as good as offline.
const feedgenTimeout = 10 * time.Second

// feedgenServiceID is the DID document service that names a feed generator's endpoint
// (atproto-reference §11.6).
const feedgenServiceID = "bsky_fg"

// errNoFeedService is returned by feedgenEndpoint when the feed service's DID document
// has no #bsky_fg endpoint.
var errNoFeedService = errors.New("DID document has no #bsky_fg service")

// feedDeps connects the AppView's custom feeds to the node: feed service DIDs resolve
// through the node's resolver (embedded PLC, did:web), skeleton requests carry a service
// JWT signed with the viewer's repo key, and every call goes out through the client that
// refuses private addresses unless net.allow_private_network is set.
func (n *Node) feedDeps() appview.FeedDeps {
	return appview.FeedDeps{
		HTTP:         identity.NewHTTPClient(n.cfg.Net.AllowPrivateNetwork, feedgenTimeout),
		Endpoint:     n.feedgenEndpoint,
		ServiceToken: n.feedgenServiceToken,
	}
}

// feedgenEndpoint returns the #bsky_fg endpoint of the feed service did.
func (n *Node) feedgenEndpoint(ctx context.Context, did syntax.DID) (string, error) {
	id, err := n.ident.resolver.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		return "", fmt.Errorf("resolve feed service %s: %w", did, err)
	}
	ep := id.GetServiceEndpoint(feedgenServiceID)
	if ep == "" {
		return "", fmt.Errorf("feed service %s: %w", did, errNoFeedService)
	}
	return ep, nil
}

// feedgenServiceToken mints the service JWT a viewer's getFeedSkeleton call carries, as
// the reference PDS does for getFeed: iss the viewer, aud the feed service, lxm the
// method. A viewer hosted elsewhere gets "": its skeleton is asked for anonymously.
func (n *Node) feedgenServiceToken(ctx context.Context, iss syntax.DID, aud, lxm string) (string, error) {
	key, err := n.repos.SigningKey(ctx, iss)
	if errors.Is(err, repo.ErrRepoNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("load signing key of %s: %w", iss, err)
	}
	now := n.now()
	return signServiceToken(key, iss, aud, lxm, now, now.Add(serviceTokenTTL))
}
