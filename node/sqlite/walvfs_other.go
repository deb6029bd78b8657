//go:build !unix

package sqlite

// vfsName is "", SQLite's default VFS: the WAL wrapper of walvfs.go wraps unix-excl.
func vfsName() (string, error) { return "", nil }
