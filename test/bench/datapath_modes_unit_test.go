package bench

import "testing"

// TestHelpListsFlag: the optional datapath modes run only on an agent
// whose --help lists their flag.
func TestHelpListsFlag(t *testing.T) {
	help := `Flags:
      --datapath-mode string               How programs attach to endpoint veths
      --debug                              Log at debug level
  -h, --help                               help for membrane-agent
      --host-routing-table int             a flag whose name only starts with the one asked for
      --socket string                      Unix socket; see also --device-mode
`
	for flag, want := range map[string]bool{
		"--datapath-mode": true,
		"--debug":         true,
		"--help":          true,
		"--host-routing":  false, // only --host-routing-table
		"--device-mode":   false, // only mentioned in a description
	} {
		if got := helpListsFlag(help, flag); got != want {
			t.Errorf("helpListsFlag(%s) = %v, want %v", flag, got, want)
		}
	}
}
