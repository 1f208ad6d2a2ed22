package main

import (
	"runtime/debug"
)

var cmdVersion = &command{
	name:    "version",
	args:    "",
	summary: "print tjob's version (also tjob --version)",
	help: `Prints tjob's module version and the commit it was built from ("modified"
when the tree had changes), as Go recorded them in the binary.

Examples:
  $ tjob version
  tjob v0.0.0-20261202215623-f167734c58b5 commit f167734c58b53ee8fc5dd98ba409b506b7603b3d go1.26.8
`,
	nargs: func(n int) bool { return n == 0 },
	local: true,
	run: func(c *cli, args []string) error {
		info, _ := debug.ReadBuildInfo()
		return c.println(versionOf(info))
	},
}

// versionOf says which tjob this is: "tjob VERSION commit REV[ (modified)]
// GOVERSION", from what the Go toolchain embeds; info is nil when it
// embedded nothing.
func versionOf(info *debug.BuildInfo) string {
	if info == nil {
		return "tjob (no build information)"
	}
	vcs := map[string]string{}
	for _, s := range info.Settings {
		vcs[s.Key] = s.Value
	}
	v := "tjob " + info.Main.Version
	if rev := vcs["vcs.revision"]; rev != "" {
		v += " commit " + rev
	} else {
		// Go records none in a workspace (go.work) or a linked git worktree.
		v += " (commit not recorded)"
	}
	if vcs["vcs.modified"] == "true" {
		v += " (modified)"
	}
	return v + " " + info.GoVersion
}
