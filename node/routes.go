package node

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/aerie-social/aerie/node/xrpc"
)

// routes builds the whole HTTP surface. Every route is registered here.
func (n *Node) routes() http.Handler {
	return n.routesWith(n.ident)
}

// routesWith is routes with the identity service ids, which tests build with fake DNS and
// HTTP for what lives outside the process.
func (n *Node) routesWith(ids *identityService) http.Handler {
	r := chi.NewRouter()
	r.Use(requestMiddleware(n.log), cors)

	x := &xrpcMux{log: n.log, methods: map[string]xrpcMethod{}}
	n.adminRoutes(x)
	n.blobRoutes(r, x)
	n.appStartupRoutes(x)
	n.appviewRoutes(x)
	x.query("com.atproto.server.describeServer", n.handleComAtprotoServerDescribeServer)
	x.procedure("com.atproto.server.createAccount", n.handleComAtprotoServerCreateAccount)
	x.procedure("com.atproto.server.createSession", n.handleComAtprotoServerCreateSession)
	x.query("com.atproto.server.getSession", n.withAuth(authAccess, n.handleComAtprotoServerGetSession))
	x.procedure("com.atproto.server.refreshSession", n.withAuth(authRefresh, n.handleComAtprotoServerRefreshSession))
	x.procedure("com.atproto.server.deleteSession", n.withAuth(authRefresh, n.handleComAtprotoServerDeleteSession))
	x.procedure("com.atproto.server.createAppPassword", n.withAuth(authFull, n.handleComAtprotoServerCreateAppPassword))
	x.query("com.atproto.server.listAppPasswords", n.withAuth(authAccess, n.handleComAtprotoServerListAppPasswords))
	x.procedure("com.atproto.server.revokeAppPassword", n.withAuth(authAccess, n.handleComAtprotoServerRevokeAppPassword))
	x.procedure("com.atproto.server.createInviteCode", n.withAuth(authAdmin, n.handleComAtprotoServerCreateInviteCode))
	x.procedure("com.atproto.server.createInviteCodes", n.withAuth(authAdmin, n.handleComAtprotoServerCreateInviteCodes))
	x.procedure("com.atproto.server.requestEmailConfirmation", n.withAuth(authAccess, n.handleComAtprotoServerRequestEmailConfirmation))
	x.procedure("com.atproto.server.confirmEmail", n.withAuth(authAccess, n.handleComAtprotoServerConfirmEmail))
	x.procedure("com.atproto.server.requestEmailUpdate", n.withAuth(authFull, n.handleComAtprotoServerRequestEmailUpdate))
	x.procedure("com.atproto.server.updateEmail", n.withAuth(authFull, n.handleComAtprotoServerUpdateEmail))
	x.procedure("com.atproto.server.requestPasswordReset", n.handleComAtprotoServerRequestPasswordReset)
	x.procedure("com.atproto.server.resetPassword", n.handleComAtprotoServerResetPassword)
	x.query("com.atproto.server.getAccountInviteCodes", n.withAuth(authFull, n.handleComAtprotoServerGetAccountInviteCodes))
	x.procedure("com.atproto.server.deactivateAccount", n.withAuth(authFull, n.handleComAtprotoServerDeactivateAccount))
	x.procedure("com.atproto.server.activateAccount", n.withAuth(authFull, n.handleComAtprotoServerActivateAccount))
	x.query("com.atproto.server.checkAccountStatus", n.withAuth(authAccess, n.handleComAtprotoServerCheckAccountStatus))
	x.procedure("com.atproto.server.requestAccountDelete", n.withAuth(authFull, n.handleComAtprotoServerRequestAccountDelete))
	x.procedure("com.atproto.server.deleteAccount", n.handleComAtprotoServerDeleteAccount)
	x.query("com.atproto.server.getServiceAuth", n.withAuthOrTakendown(ids.handleComAtprotoServerGetServiceAuth))
	x.procedure("com.atproto.server.reserveSigningKey", ids.handleComAtprotoServerReserveSigningKey)

	x.query("com.atproto.identity.resolveHandle", ids.handleComAtprotoIdentityResolveHandle)
	x.query("com.atproto.identity.resolveDid", ids.handleComAtprotoIdentityResolveDid)
	x.query("com.atproto.identity.resolveIdentity", ids.handleComAtprotoIdentityResolveIdentity)
	x.procedure("com.atproto.identity.refreshIdentity", ids.handleComAtprotoIdentityRefreshIdentity)
	x.procedure("com.atproto.identity.updateHandle", n.withAuth(authPrivileged, ids.handleComAtprotoIdentityUpdateHandle))
	x.query("com.atproto.identity.getRecommendedDidCredentials", n.withAuth(authAccess, ids.handleComAtprotoIdentityGetRecommendedDidCredentials))
	x.procedure("com.atproto.identity.requestPlcOperationSignature", n.withAuth(authFull, ids.handleComAtprotoIdentityRequestPlcOperationSignature))
	x.procedure("com.atproto.identity.signPlcOperation", n.withAuth(authFull, ids.handleComAtprotoIdentitySignPlcOperation))
	x.procedure("com.atproto.identity.submitPlcOperation", n.withAuth(authPrivileged, ids.handleComAtprotoIdentitySubmitPlcOperation))

	x.procedure("com.atproto.repo.createRecord", n.withAuth(authAccess, n.handleComAtprotoRepoCreateRecord))
	x.procedure("com.atproto.repo.putRecord", n.withAuth(authAccess, n.handleComAtprotoRepoPutRecord))
	x.procedure("com.atproto.repo.deleteRecord", n.withAuth(authAccess, n.handleComAtprotoRepoDeleteRecord))
	x.procedure("com.atproto.repo.applyWrites", n.withAuth(authAccess, n.handleComAtprotoRepoApplyWrites))
	x.procedure("com.atproto.repo.importRepo", n.withAuth(authFull, n.handleComAtprotoRepoImportRepo))
	x.query("com.atproto.repo.getRecord", n.withAuth(authOptional, n.handleComAtprotoRepoGetRecord))
	x.query("com.atproto.repo.listRecords", n.withAuth(authOptional, n.handleComAtprotoRepoListRecords))
	x.query("com.atproto.repo.describeRepo", n.withAuth(authOptional, n.handleComAtprotoRepoDescribeRepo))

	x.query("com.atproto.sync.getLatestCommit", n.withAuth(authOptional, n.handleComAtprotoSyncGetLatestCommit))
	x.query("com.atproto.sync.getRepo", n.withAuth(authOptional, n.handleComAtprotoSyncGetRepo))
	x.query("com.atproto.sync.getRecord", n.withAuth(authOptional, n.handleComAtprotoSyncGetRecord))
	x.query("com.atproto.sync.getBlocks", n.withAuth(authOptional, n.handleComAtprotoSyncGetBlocks))
	x.query("com.atproto.sync.getRepoStatus", n.handleComAtprotoSyncGetRepoStatus)
	x.query("com.atproto.sync.listRepos", n.handleComAtprotoSyncListRepos)
	x.procedure("com.atproto.sync.requestCrawl", n.handleComAtprotoSyncRequestCrawl)
	// notifyOfUpdate is the deprecated predecessor of requestCrawl; relays treat it alike.
	x.procedure("com.atproto.sync.notifyOfUpdate", n.handleComAtprotoSyncRequestCrawl)
	x.query("com.atproto.sync.listHosts", n.handleComAtprotoSyncListHosts)
	x.query("com.atproto.sync.getHostStatus", n.handleComAtprotoSyncGetHostStatus)
	x.procedure("social.aerie.admin.backfill", n.withAuth(authAdmin, n.handleSocialAerieAdminBackfill))
	x.query("com.atproto.sync.subscribeRepos", func(w http.ResponseWriter, r *http.Request) error {
		n.firehose.ServeHTTP(w, r)
		return nil
	})
	r.Get("/xrpc/_health", n.handleHealth)
	r.Handle("/xrpc/{nsid}", x)

	r.Get("/.well-known/atproto-did", ids.handleWellKnownAtprotoDID)
	r.Get("/.well-known/did.json", ids.handleWellKnownDIDJSON)
	r.Get("/robots.txt", handleRobots)
	// The web UI answers everything else, its own HTML 404 page included.
	r.Mount("/", n.web.Handler())
	return r
}

func (n *Node) handleHealth(w http.ResponseWriter, r *http.Request) {
	xrpc.WriteJSON(w, http.StatusOK, map[string]string{"version": n.version})
}

// handleRobots lets crawlers in, as the reference PDS does: everything public here is
// public on the network anyway.
func handleRobots(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("# Hello!\n\nUser-agent: *\nAllow: /\n"))
}
