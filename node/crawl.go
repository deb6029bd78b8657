package node

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/aerie-social/aerie/node/identity"
)

// requestCrawls asks each relay in relay.crawlers to subscribe to this node's firehose.
// Only a node with a public hostname is reachable by relays, so a localhost node asks none.
// A refusal is logged and not retried: relays also find hosts by other means, and the
// operator can restart the node to ask again.
func (n *Node) requestCrawls(ctx context.Context) {
	if n.cfg.IsLocal() || len(n.cfg.Relay.Crawlers) == 0 {
		return
	}
	client := identity.NewHTTPClient(n.cfg.Net.AllowPrivateNetwork, 15*time.Second)
	body, _ := json.Marshal(map[string]string{"hostname": n.cfg.Hostname})
	for _, relayHost := range n.cfg.Relay.Crawlers {
		req, err := http.NewRequestWithContext(ctx, "POST", "https://"+relayHost+"/xrpc/com.atproto.sync.requestCrawl", bytes.NewReader(body))
		if err != nil {
			continue
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			n.log.WarnContext(ctx, "requestCrawl failed", "relay", relayHost, "err", err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			n.log.WarnContext(ctx, "requestCrawl refused", "relay", relayHost, "status", resp.StatusCode)
			continue
		}
		n.log.InfoContext(ctx, "asked relay to crawl this node", "relay", relayHost)
	}
}
