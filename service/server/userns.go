package server

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/neildo/tjob"
)

// Every job of tjobs runs in a user namespace of its own, whose root is an
// unprivileged host user that no other running job shares: the host IDs
// come in blocks of UserNSBlock from the range Config.UserNS, one block a
// running job, given back when it ends. So a job's root reaches none of
// root's files, sockets, keys or cgroups, and no two running jobs are the
// same user to the kernel (its per-user limits and keyrings included).

// UserNSBlock is how many IDs each job gets: 0 to 65535 inside, as a
// distribution's files expect (nobody is 65534).
const UserNSBlock = 65536

// DefaultUserNS is the host ID range of jobs unless told otherwise: a
// billion IDs from 1,000,000,000, past the ranges distributions hand out
// to users (/etc/subuid starts at 100,000) and systemd's.
var DefaultUserNS = tjob.IDMap{HostID: 1_000_000_000, Size: 1_000_000_000}

// ParseIDRange parses "FIRST:COUNT" (host IDs), or "off" for no user
// namespaces.
func ParseIDRange(s string) (tjob.IDMap, error) {
	if s == "off" {
		return tjob.IDMap{}, nil
	}
	first, count, ok := strings.Cut(s, ":")
	f, err1 := strconv.ParseUint(first, 10, 32)
	c, err2 := strconv.ParseUint(count, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return tjob.IDMap{}, fmt.Errorf("user namespace range %q: want FIRST:COUNT, such as 1000000000:1000000000, or off", s)
	}
	m := tjob.IDMap{HostID: uint32(f), Size: uint32(c)}
	return m, checkIDRange(m)
}

func checkIDRange(m tjob.IDMap) error {
	switch {
	case m.Size == 0:
		return nil
	case m.HostID == 0:
		return fmt.Errorf("user namespace range %d:%d starts at root's ID 0", m.HostID, m.Size)
	case m.Size < UserNSBlock:
		return fmt.Errorf("user namespace range %d:%d holds less than one job's %d IDs", m.HostID, m.Size, UserNSBlock)
	case uint64(m.HostID)+uint64(m.Size) > 1<<32-1:
		return fmt.Errorf("user namespace range %d:%d goes past the largest ID %d", m.HostID, m.Size, uint32(1<<32-2))
	}
	return nil
}

// idBlocks hands out blocks of a range.
type idBlocks struct {
	first uint32
	mu    sync.Mutex
	used  []bool
	next  int // where to look first: blocks are reused as late as may be
}

func newIDBlocks(m tjob.IDMap) *idBlocks {
	return &idBlocks{first: m.HostID, used: make([]bool, m.Size/UserNSBlock)}
}

// take returns a free block, or false when all are in use.
func (b *idBlocks) take() (tjob.IDMap, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.used {
		k := (b.next + i) % len(b.used)
		if !b.used[k] {
			b.used[k] = true
			b.next = k + 1
			return tjob.IDMap{HostID: b.first + uint32(k)*UserNSBlock, Size: UserNSBlock}, true
		}
	}
	return tjob.IDMap{}, false
}

func (b *idBlocks) give(m tjob.IDMap) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used[(m.HostID-b.first)/UserNSBlock] = false
}

func (b *idBlocks) total() int { return len(b.used) }
