package blobs

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// diskLRU keeps account of the files under one folder of the cache directory, bounded by
// their total size: adding a file past the bound removes the least recently used ones.
// The files are the truth for content, the list only for order and size; a file that has
// vanished is simply a miss. Safe for concurrent use.
type diskLRU struct {
	root *os.Root
	max  int64

	mu    sync.Mutex
	order list.List // of *lruEntry, most recently used first
	items map[string]*list.Element
	size  int64
}

type lruEntry struct {
	key   string // path inside root
	size  int64
	added time.Time // when the file was written: the age remote entries expire by
}

// openDiskLRU indexes the files already under dir (a folder of root), oldest first by
// modification time, and trims them to max bytes. The cache is bounded, so the walk is
// too.
func openDiskLRU(root *os.Root, dir string, max int64) (*diskLRU, error) {
	l := &diskLRU{root: root, max: max, items: map[string]*list.Element{}}
	var found []lruEntry
	err := fs.WalkDir(root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		found = append(found, lruEntry{key: p, size: info.Size(), added: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", dir, err)
	}
	slices.SortFunc(found, func(a, b lruEntry) int { return a.added.Compare(b.added) })
	for _, e := range found {
		l.add(e.key, e.size, e.added)
	}
	return l, nil
}

// get marks key used and returns when its file was written.
func (l *diskLRU) get(key string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.items[key]
	if !ok {
		return time.Time{}, false
	}
	l.order.MoveToFront(el)
	return el.Value.(*lruEntry).added, true
}

// add records a file just written under key and evicts the least recently used files
// until the total fits; the new file itself goes if it alone is larger than the bound.
func (l *diskLRU) add(key string, size int64, added time.Time) {
	l.mu.Lock()
	if el, ok := l.items[key]; ok {
		e := el.Value.(*lruEntry)
		l.size += size - e.size
		e.size, e.added = size, added
		l.order.MoveToFront(el)
	} else {
		l.items[key] = l.order.PushFront(&lruEntry{key: key, size: size, added: added})
		l.size += size
	}
	var victims []string
	for l.size > l.max && l.order.Len() > 0 {
		e := l.order.Remove(l.order.Back()).(*lruEntry)
		delete(l.items, e.key)
		l.size -= e.size
		victims = append(victims, e.key)
	}
	l.mu.Unlock()
	// Outside the lock: removal is I/O, and a request that still has the file open keeps
	// reading it.
	for _, k := range victims {
		l.root.Remove(k)
	}
}

// remove forgets the keys the filter selects and deletes their files; it returns how
// many and their bytes.
func (l *diskLRU) remove(filter func(e *lruEntry) bool) (int, int64) {
	l.mu.Lock()
	var victims []*lruEntry
	for el := l.order.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*lruEntry); filter(e) {
			l.order.Remove(el)
			delete(l.items, e.key)
			l.size -= e.size
			victims = append(victims, e)
		}
		el = next
	}
	l.mu.Unlock()
	var freed int64
	for _, e := range victims {
		if err := l.root.Remove(e.key); err == nil || errors.Is(err, fs.ErrNotExist) {
			freed += e.size
		}
	}
	return len(victims), freed
}

// removeKey forgets one key and deletes its file.
func (l *diskLRU) removeKey(key string) {
	l.mu.Lock()
	el, ok := l.items[key]
	if ok {
		e := l.order.Remove(el).(*lruEntry)
		delete(l.items, key)
		l.size -= e.size
	}
	l.mu.Unlock()
	// Remove even an unknown key: a file written by a generation that lost a race with
	// an eviction may exist without an entry.
	l.root.Remove(key)
}

// removePrefix forgets every key under prefix and deletes the files.
func (l *diskLRU) removePrefix(prefix string) {
	l.remove(func(e *lruEntry) bool { return strings.HasPrefix(e.key, prefix) })
}

// usage returns the entry count and total bytes.
func (l *diskLRU) usage() (int, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len(), l.size
}
