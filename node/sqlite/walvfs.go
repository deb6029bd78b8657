//go:build unix

package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// walVFSName is the VFS every database is opened with: SQLite's unix-excl with the
// write-ahead log's writes gathered (see walFile). unix-excl locks each file for this
// process once, at open, and keeps the WAL index in this process's memory rather than in
// a -shm file that every open must size, fill and map and every transaction lock with
// fcntl. That halves the cost of opening a repo on an LRU miss (about 30 system calls
// fewer) and takes the shm locks out of every commit. Connections within the process
// still share the file; other processes cannot open it while the node runs, which
// aerie.lock already means for the data directory (the CLI goes through the admin API).
const walVFSName = "aerie-unix-excl"

// baseVFSName is the VFS walVFSName wraps.
const baseVFSName = "unix-excl"

const (
	// walHeaderSize and walFrameHeaderSize are the WAL file header and the header SQLite
	// writes before each page (its bytes 4-7 are nonzero on the frame that commits).
	walHeaderSize      = 32
	walFrameHeaderSize = 24
	// walFileOffset is where the wrapped VFS's own file struct sits inside ours, after
	// our pMethods and the walFiles handle.
	walFileOffset = 16
	// walFlushBytes bounds what a WAL file holds back: a transaction bigger than this
	// (one that spills pages before it commits) is written in pieces of this size.
	walFlushBytes = 4 << 20
	// walMaxWrite is the most the unix VFS writes in one call: it was only ever given a
	// page or less, and masks the length to 17 bits.
	walMaxWrite = 0x1f000
)

// The VFS registry is SQLite's and process-wide, so the wrapper is registered once per
// process, on the first Open; these are its state. The method tables live in Go globals
// because SQLite keeps pointers to them for as long as the process runs.
var (
	registerWALVFS = sync.OnceValue(registerVFS)
	walVFS         sqlite3.Tsqlite3_vfs
	walMethods     sqlite3.Tsqlite3_io_methods
	baseVFS        uintptr
	baseMethods    *sqlite3.Tsqlite3_io_methods
	walMethodsOnce sync.Once

	// walFiles maps the handle in each open WAL file to its *walFile.
	walFiles sync.Map
	walNext  atomic.Uintptr

	// walBuffers are reused whole: a buffer grows to the size of the biggest transaction
	// it has held (at most walFlushBytes), and the pool lets idle ones go.
	walBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}
)

// walFile gathers the writes SQLite makes to one open WAL file and writes them with a few
// big system calls. SQLite writes each frame as two writes (its 24-byte header, then the
// page), so a commit of n pages was 2n pwrites; on a virtual machine each costs several
// microseconds, about a third of the indexer's time and a good part of a repo commit's.
//
// What is held back is written before SQLite can depend on it being in the file: when
// the frame that commits a transaction has been written (before the commit becomes
// visible to other connections in the WAL index, and before it returns), and before
// this handle reads, syncs, truncates, sizes, controls or closes the file. Frames of a
// transaction still open are visible to no other connection, so they may wait; a crash
// loses only such frames, which a crash would have made void anyway.
type walFile struct {
	base uintptr // the wrapped VFS's sqlite3_file
	off  int64   // the file offset of buf[0]
	buf  *[]byte // nil when nothing is held back
	// commits is set after the header of a commit frame: the next write (its page)
	// completes the commit.
	commits bool
}

// vfsName registers the wrapper if it is not yet and returns its name.
func vfsName() (string, error) {
	if err := registerWALVFS(); err != nil {
		return "", err
	}
	return walVFSName, nil
}

func registerVFS() error {
	tls := libc.NewTLS()
	defer tls.Close()
	name, err := libc.CString(baseVFSName)
	if err != nil {
		return fmt.Errorf("register SQLite VFS: %w", err)
	}
	baseVFS = sqlite3.Xsqlite3_vfs_find(tls, name)
	libc.Xfree(tls, name)
	if baseVFS == 0 {
		return errors.New("register SQLite VFS: " + baseVFSName + " not found")
	}
	walVFS = *(*sqlite3.Tsqlite3_vfs)(cptr(baseVFS))
	walVFS.FszOsFile += walFileOffset
	walVFS.FpNext = 0
	// SQLite keeps the name for the life of the process.
	if walVFS.FzName, err = libc.CString(walVFSName); err != nil {
		return fmt.Errorf("register SQLite VFS: %w", err)
	}
	walVFS.FxOpen = funcPtr(walOpen)
	if rc := sqlite3.Xsqlite3_vfs_register(tls, uintptr(unsafe.Pointer(&walVFS)), 0); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("register SQLite VFS: error code %d", rc)
	}
	return nil
}

// walOpen is the wrapper's xOpen: a WAL file gets walMethods with the wrapped file
// inside ours; any other file is the wrapped VFS's own.
func walOpen(tls *libc.TLS, _ uintptr, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	open := cfunc[func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32]((*sqlite3.Tsqlite3_vfs)(cptr(baseVFS)).FxOpen)
	if flags&sqlite3.SQLITE_OPEN_WAL == 0 {
		return open(tls, baseVFS, zName, pFile, flags, pOutFlags)
	}
	file := (*sqlite3.Tsqlite3_file)(cptr(pFile))
	file.FpMethods = 0
	base := pFile + walFileOffset
	if rc := open(tls, baseVFS, zName, base, flags, pOutFlags); rc != sqlite3.SQLITE_OK {
		return rc
	}
	walMethodsOnce.Do(func() { initWALMethods((*sqlite3.Tsqlite3_file)(cptr(base)).FpMethods) })
	handle := walNext.Add(1)
	walFiles.Store(handle, &walFile{base: base})
	*(*uintptr)(cptr(pFile + 8)) = handle
	file.FpMethods = uintptr(unsafe.Pointer(&walMethods))
	return sqlite3.SQLITE_OK
}

// initWALMethods fills walMethods: the wrapped file's methods, each called with the
// wrapped file, the reads and writes through walFile.
func initWALMethods(methods uintptr) {
	baseMethods = (*sqlite3.Tsqlite3_io_methods)(cptr(methods))
	walMethods = sqlite3.Tsqlite3_io_methods{
		FiVersion:               baseMethods.FiVersion,
		FxClose:                 funcPtr(walClose),
		FxRead:                  funcPtr(walRead),
		FxWrite:                 funcPtr(walWrite),
		FxTruncate:              funcPtr(walTruncate),
		FxSync:                  funcPtr(walSync),
		FxFileSize:              funcPtr(walFileSize),
		FxLock:                  funcPtr(walLock),
		FxUnlock:                funcPtr(walUnlock),
		FxCheckReservedLock:     funcPtr(walCheckReservedLock),
		FxFileControl:           funcPtr(walFileControl),
		FxSectorSize:            funcPtr(walSectorSize),
		FxDeviceCharacteristics: funcPtr(walDeviceCharacteristics),
		FxShmMap:                funcPtr(walShmMap),
		FxShmLock:               funcPtr(walShmLock),
		FxShmBarrier:            funcPtr(walShmBarrier),
		FxShmUnmap:              funcPtr(walShmUnmap),
		FxFetch:                 funcPtr(walFetch),
		FxUnfetch:               funcPtr(walUnfetch),
	}
}

// walFileAt returns the state of the open WAL file pFile.
func walFileAt(pFile uintptr) *walFile {
	f, _ := walFiles.Load(*(*uintptr)(cptr(pFile + 8)))
	return f.(*walFile)
}

// flush writes what f holds back.
func (f *walFile) flush(tls *libc.TLS) int32 {
	if f.buf == nil {
		return sqlite3.SQLITE_OK
	}
	buf := *f.buf
	write := cfunc[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](baseMethods.FxWrite)
	rc := int32(sqlite3.SQLITE_OK)
	for done := 0; done < len(buf) && rc == sqlite3.SQLITE_OK; {
		n := min(len(buf)-done, walMaxWrite)
		rc = write(tls, f.base, uintptr(unsafe.Pointer(&buf[done])), int32(n), f.off+int64(done))
		done += n
	}
	runtime.KeepAlive(buf)
	// Written or not, the bytes are done with: after a failed write SQLite abandons the
	// transaction, and its frames must not reach the file later.
	*f.buf = buf[:0]
	walBuffers.Put(f.buf)
	f.buf, f.commits = nil, false
	return rc
}

func walWrite(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	f := walFileAt(pFile)
	if f.buf != nil && iOfst != f.off+int64(len(*f.buf)) {
		if rc := f.flush(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if f.buf == nil {
		f.buf, f.off = walBuffers.Get().(*[]byte), iOfst
	}
	data := unsafe.Slice((*byte)(cptr(zBuf)), iAmt)
	*f.buf = append(*f.buf, data...)
	completes := f.commits
	f.commits = iAmt == walFrameHeaderSize && iOfst >= walHeaderSize && binary.BigEndian.Uint32(data[4:8]) != 0
	if completes || len(*f.buf) >= walFlushBytes-walMaxWrite {
		return f.flush(tls)
	}
	return sqlite3.SQLITE_OK
}

func walRead(tls *libc.TLS, pFile, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	f := walFileAt(pFile)
	// The writer reads back pages it spilled to the log earlier in its transaction;
	// those still held back are copied from the buffer. Reads of the rest of the file
	// leave the buffer alone, so spilling and reading back does not write page by page.
	if f.buf != nil && iOfst < f.off+int64(len(*f.buf)) && iOfst+int64(iAmt) > f.off {
		if iOfst >= f.off && iOfst+int64(iAmt) <= f.off+int64(len(*f.buf)) {
			copy(unsafe.Slice((*byte)(cptr(zBuf)), iAmt), (*f.buf)[iOfst-f.off:])
			return sqlite3.SQLITE_OK
		}
		if rc := f.flush(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	return cfunc[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](baseMethods.FxRead)(tls, f.base, zBuf, iAmt, iOfst)
}

func walClose(tls *libc.TLS, pFile uintptr) int32 {
	v, _ := walFiles.LoadAndDelete(*(*uintptr)(cptr(pFile + 8)))
	f := v.(*walFile)
	rc := f.flush(tls)
	if crc := cfunc[func(*libc.TLS, uintptr) int32](baseMethods.FxClose)(tls, f.base); rc == sqlite3.SQLITE_OK {
		rc = crc
	}
	return rc
}

// flushed writes what the WAL file pFile holds back and returns the wrapped file, for the
// methods that must see the file as SQLite has written it.
func flushed(tls *libc.TLS, pFile uintptr) (uintptr, int32) {
	f := walFileAt(pFile)
	return f.base, f.flush(tls)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	base, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return cfunc[func(*libc.TLS, uintptr, int64) int32](baseMethods.FxTruncate)(tls, base, size)
}

func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	base, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return cfunc[func(*libc.TLS, uintptr, int32) int32](baseMethods.FxSync)(tls, base, flags)
}

func walFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	base, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return cfunc[func(*libc.TLS, uintptr, uintptr) int32](baseMethods.FxFileSize)(tls, base, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	base, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return cfunc[func(*libc.TLS, uintptr, int32, uintptr) int32](baseMethods.FxFileControl)(tls, base, op, pArg)
}

// The remaining methods do not touch the file's bytes; SQLite calls few of them on a WAL.

func walLock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	return cfunc[func(*libc.TLS, uintptr, int32) int32](baseMethods.FxLock)(tls, pFile+walFileOffset, lock)
}

func walUnlock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	return cfunc[func(*libc.TLS, uintptr, int32) int32](baseMethods.FxUnlock)(tls, pFile+walFileOffset, lock)
}

func walCheckReservedLock(tls *libc.TLS, pFile, pResOut uintptr) int32 {
	return cfunc[func(*libc.TLS, uintptr, uintptr) int32](baseMethods.FxCheckReservedLock)(tls, pFile+walFileOffset, pResOut)
}

func walSectorSize(tls *libc.TLS, pFile uintptr) int32 {
	return cfunc[func(*libc.TLS, uintptr) int32](baseMethods.FxSectorSize)(tls, pFile+walFileOffset)
}

func walDeviceCharacteristics(tls *libc.TLS, pFile uintptr) int32 {
	return cfunc[func(*libc.TLS, uintptr) int32](baseMethods.FxDeviceCharacteristics)(tls, pFile+walFileOffset)
}

func walShmMap(tls *libc.TLS, pFile uintptr, iPg, pgsz, bExtend int32, pp uintptr) int32 {
	return cfunc[func(*libc.TLS, uintptr, int32, int32, int32, uintptr) int32](baseMethods.FxShmMap)(tls, pFile+walFileOffset, iPg, pgsz, bExtend, pp)
}

func walShmLock(tls *libc.TLS, pFile uintptr, offset, n, flags int32) int32 {
	return cfunc[func(*libc.TLS, uintptr, int32, int32, int32) int32](baseMethods.FxShmLock)(tls, pFile+walFileOffset, offset, n, flags)
}

func walShmBarrier(tls *libc.TLS, pFile uintptr) {
	cfunc[func(*libc.TLS, uintptr)](baseMethods.FxShmBarrier)(tls, pFile+walFileOffset)
}

func walShmUnmap(tls *libc.TLS, pFile uintptr, deleteFlag int32) int32 {
	return cfunc[func(*libc.TLS, uintptr, int32) int32](baseMethods.FxShmUnmap)(tls, pFile+walFileOffset, deleteFlag)
}

func walFetch(tls *libc.TLS, pFile uintptr, iOfst int64, iAmt int32, pp uintptr) int32 {
	base, rc := flushed(tls, pFile)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	return cfunc[func(*libc.TLS, uintptr, int64, int32, uintptr) int32](baseMethods.FxFetch)(tls, base, iOfst, iAmt, pp)
}

func walUnfetch(tls *libc.TLS, pFile uintptr, iOfst int64, p uintptr) int32 {
	return cfunc[func(*libc.TLS, uintptr, int64, uintptr) int32](baseMethods.FxUnfetch)(tls, pFile+walFileOffset, iOfst, p)
}

// cptr turns an address the SQLite library handed us into a pointer. The library's
// memory is not Go's heap; going through the variable's address keeps vet from reading
// this as pointer arithmetic on a Go object.
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// funcPtr is the library's representation of a function pointer to f; f must be a
// top-level function, which the garbage collector never frees.
func funcPtr[F any](f F) uintptr { return *(*uintptr)(unsafe.Pointer(&f)) }

// cfunc calls back into the library: the inverse of funcPtr.
func cfunc[F any](p uintptr) F { return *(*F)(unsafe.Pointer(&p)) }
