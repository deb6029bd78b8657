// Package web is the node's built-in web UI: server-rendered HTML pages over the AppView's
// views, with the writes going through a Backend the node implements.
//
// Pages are html/template files embedded from templates/, styled by one embedded CSS file
// and enhanced by one small script (static/), so reading works without JavaScript. URLs
// follow bsky.app's scheme (/profile/<handle-or-did>, /profile/<handle>/post/<rkey>,
// /notifications, /search?q=, /settings) so a link carries over by swapping the host.
// The script only adds what needs a browser: the live character count, image previews,
// and likes and reposts that update the post in place.
//
// Posts are built here, not in the node: mentions and links become richtext facets (byte
// ranges of the UTF-8 text), images are uploaded through Backend.UploadBlob and embedded
// with their descriptions, and a quote is app.bsky.embed.record (recordWithMedia with
// images). Facets read back from any client are checked before they become links.
//
// Reads call the AppView's XRPC method handlers in the process (appview.Methods) with the
// viewer set by appview.WithViewer, and decode their JSON into this package's view types:
// the AppView exports no query functions, and going through the handlers keeps one code
// path, with its parameter checks and error mapping, for the API and the UI.
//
// A session is a cookie signed with the node's key (HMAC-SHA256) that names the account
// and when it expires; every form carries a CSRF token bound to a random per-browser
// nonce cookie and to the signed-in account, checked on every POST.
package web
