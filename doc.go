// Package tjob runs Linux processes as jobs: each with resource limits that
// the kernel enforces (a cgroup of its own), in isolation from the host (PID,
// mount, network, UTS and IPC namespaces of its own), with its combined
// stdout and stderr kept from the first byte so that any number of readers
// can replay it and follow it live.
//
// A Job is configured through its fields, like os/exec.Cmd, and driven by a
// few verbs:
//
//	job := tjob.NewJob("ping", "127.0.0.1")
//	job.CPUPercent = 20 // a fifth of one CPU
//	job.MemoryMB = 20   // MiB
//	done := job.Run()   // starts it; does not wait
//	...
//	job.Stop()          // SIGTERM, then SIGKILL after GracePeriod
//	st := <-done        // the final Status
//	job.Close()         // removes its output
//
// # Output
//
// The job's stdout and stderr go through one pipe, so they keep the order in
// which they were written, into a spool file (Job.SpoolDir). Readers from
// Job.Output read the file at their own offsets and are woken by new output;
// a slow reader never slows the job or other readers, and memory does not
// grow with the output. The Job owns its spool file until Close.
//
// # Limits
//
// CPUPercent, MemoryMB, ReadBPS, WriteBPS and PidsMax are written into the
// job's cgroup before the command runs (cgroup v2, or v1 on hosts that still
// have it). Zero means no limit. The process is born inside the cgroup with
// clone3(CLONE_INTO_CGROUP) on v2; on v1 the jail's init joins the cgroup
// before it starts the command. When the job ends, whatever is left in the
// cgroup is killed and the cgroup removed.
//
// # Isolation
//
// Unless NoJail is set, the job runs under an init of its own (the small
// cmd/tjob-init beside the program, or the program itself started again;
// see internal/jobinit) in new PID, mount, network, UTS, IPC and cgroup
// namespaces, and with UserNS in a user namespace whose root is an
// unprivileged host user: it sees only its own processes in /proc, only a
// loopback network, its own hostname and its own cgroup as "/", and its
// mounts never reach the host. The init gives up what the job must not
// have before the command starts, on every one of its threads: it keeps
// Docker's default capabilities less CAP_MKNOD, sets no_new_privs, cannot
// be traced or read by the job, and installs Docker's default seccomp
// profile. Only file descriptors 0, 1 and 2 reach the job. The init
// forwards signals to the command, reaps orphans and reports the command's
// own exit status.
//
// The host's file system stays visible, read and write as the job's user
// (which, in a user namespace, may write only what belongs to its host
// IDs), or read-only with ReadOnlyRoot but for Dir and a private /tmp
// (TmpDir, a directory on disk, or an empty one in memory), except the
// paths in MaskPaths and the spool directory: the jail is not a chroot.
//
// Jobs need root: for cgroups and for namespaces.
package tjob
