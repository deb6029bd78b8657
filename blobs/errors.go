package blobs

import "errors"

// Sentinels. The node maps each to its XRPC error in node/errors.go; the names in
// brackets are the XRPC error names the reference PDS uses.
var (
	// ErrBlobNotFound is returned when the account has no such blob, or only a temporary
	// one where a committed blob is needed (getBlob) [BlobNotFound, 400].
	ErrBlobNotFound = errors.New("blob not found")
	// ErrTooLarge is returned by Upload when the body exceeds Config.MaxSize
	// [PayloadTooLarge, 413].
	ErrTooLarge = errors.New("blob is larger than the server accepts")
	// ErrQuotaExceeded is returned by Upload when the account's blobs would exceed
	// Config.Quota [PayloadTooLarge, 413, with a message naming the quota].
	ErrQuotaExceeded = errors.New("account blob quota exceeded")
	// ErrInvalidMimeType is returned by Check when a record's blob ref names another MIME
	// type than the stored blob has, and by Upload when the content is not what the
	// declared type says it is [InvalidMimeType, 400].
	ErrInvalidMimeType = errors.New("blob MIME type does not match")
	// ErrInvalidSize is returned by Check when a record's blob ref names another size than
	// the stored blob has [InvalidSize, 400].
	ErrInvalidSize = errors.New("blob size does not match")
	// ErrAccountNotFound is returned when the DID is not an account this node serves blobs
	// for [RepoNotFound, 400].
	ErrAccountNotFound = errors.New("account not found")
	// ErrAccountDeactivated is returned for a deactivated account's blobs
	// [RepoDeactivated, 400].
	ErrAccountDeactivated = errors.New("account is deactivated")
	// ErrAccountTakendown is returned for a taken-down account's blobs
	// [RepoTakendown, 400].
	ErrAccountTakendown = errors.New("account is taken down")
	// ErrImageTooLarge is returned when an image's header declares more pixels than
	// Config.MaxPixels; nothing of the image body has been decoded.
	ErrImageTooLarge = errors.New("image has too many pixels")
	// ErrUnsupportedImage is returned for a blob that is not a JPEG, PNG, GIF or WebP
	// image, or whose image data is malformed.
	ErrUnsupportedImage = errors.New("unsupported or malformed image")
	// ErrRemoteFetch is returned when another host's blob could not be fetched or failed
	// CID verification.
	ErrRemoteFetch = errors.New("fetch remote blob")
)
