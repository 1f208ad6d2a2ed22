package server

import (
	"strings"

	"github.com/neildo/tjob"
)

// cleanupStale removes the cgroups, and kills the processes in them, that
// jobs of a crashed predecessor left, and logs what it removed.
func cleanupStale(logf func(format string, args ...any)) {
	removed, err := tjob.CleanupStale()
	if len(removed) > 0 {
		logf("cleanup: removed %d stale cgroups: %s", len(removed), strings.Join(removed, " "))
	}
	if err != nil {
		logf("cleanup: stale cgroups: %s", message(err))
	}
}
