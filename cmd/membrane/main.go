// membrane is the operator's debug CLI for membrane-agent: it shows and
// edits endpoints, identities, pods and IPAM and lists the cluster's
// nodes through the agent's unix socket, dumps the agent's statedb
// tables (and queries and follows them in the agent's live shell), and reads the pinned BPF maps directly (so `membrane bpf ...` works while the agent is down).
//
// Try it against a running agent:
//
//	membrane status
//	membrane endpoint list
//	membrane pod apply -f pods.yaml
//	membrane node list
//	membrane statedb ipcache
//	membrane shell -- db/watch endpoints
//	membrane bpf ipcache list
//
// The commands live one group per file (endpoint.go, pod.go, ...); root.go
// holds the global flags, error reporting and output formats.
package main

import "os"

func main() {
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
