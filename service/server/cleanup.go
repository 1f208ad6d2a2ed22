package server

// cleanupStale removes the cgroups that jobs of a crashed predecessor left.
//
// TODO(cgroups): call tjob.CleanupStale() here, and log what it removed,
// once the library has it (the cgroups work adds it). Until then, leftovers
// from a crash stay until reboot; the shim's lifeline already kills the
// processes of a server that died.
func cleanupStale(logf func(format string, args ...any)) {}
