// Package buildinfo reads what the Go toolchain recorded about the
// natsgate binary: the module version and the VCS revision it was built
// from. The version command, the start-up log line and the
// natsgate_build_info metric all read it here, so they always agree.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Info is the binary's build, as recorded by the toolchain.
type Info struct {
	// Version is the main module's version: a tag, a pseudo-version for
	// an untagged commit (with "+dirty" for uncommitted changes), or
	// "(devel)" when the build does not say.
	Version string
	// Revision is the VCS commit the binary was built from, "unknown"
	// when the build was not stamped (go build -buildvcs=false, or no
	// git at build time).
	Revision string
	// Modified is true when the work tree had uncommitted changes.
	Modified bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// version and revision are set at link time where the toolchain cannot
// record them: a build without the repository's .git (the Dockerfile's,
// whose context leaves it out) passes
// -ldflags "-X github.com/natsgate/natsgate/internal/buildinfo.version=v1.2.3
// -X github.com/natsgate/natsgate/internal/buildinfo.revision=<commit>".
// What the toolchain recorded wins when it recorded something.
var version, revision string

// Read returns the running binary's build information.
func Read() Info {
	in := Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	if version != "" {
		in.Version = version
	}
	if revision != "" {
		in.Revision = revision
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		in.Version = bi.Main.Version
	}
	for _, st := range bi.Settings {
		switch st.Key {
		case "vcs.revision":
			if st.Value != "" {
				in.Revision = st.Value
			}
		case "vcs.modified":
			in.Modified = st.Value == "true"
		}
	}
	return in
}
