package tables

import (
	"strconv"
	"strings"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
)

// K8sAPIServer is the name of the K8sStatus row of the connection itself;
// the other rows are the caches the agent watches.
const K8sAPIServer = "api-server"

// K8sStatus is one part of the Kubernetes connection as the agent last saw
// it: the API server (row K8sAPIServer: does it answer?) or one watched
// resource (has its cache synced?). The cells of the Kubernetes mode
// write it; `membrane status` shows it. Empty outside Kubernetes mode.
type K8sStatus struct {
	// Name is K8sAPIServer or the watched resource ("pods", "namespaces",
	// "ciliumnetworkpolicies", ...).
	Name string `json:"name"`
	// OK: the API server answered its last probe; the cache has synced.
	OK bool `json:"ok"`
	// Detail says more: the API server's address, what the cache holds.
	Detail string `json:"detail,omitempty"`
	// LastError is the last failure (a refused probe, a failed list or
	// watch), kept after recovery so an operator sees what happened.
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	// Since is when OK last changed.
	Since time.Time `json:"since,omitzero"`
	// Events counts the watch events the agent received for the resource
	// (the initial list included): what the cluster costs this agent.
	Events uint64 `json:"events,omitempty"`
}

func (s *K8sStatus) TableHeader() []string {
	return []string{"Name", "OK", "Detail", "Events", "LastError", "Since"}
}

func (s *K8sStatus) TableRow() []string {
	ok := "no"
	if s.OK {
		ok = "yes"
	}
	last := s.LastError
	if last != "" {
		last = s.LastErrorAt.UTC().Format(time.RFC3339) + " " + strings.ReplaceAll(last, "\n", " ")
	}
	return []string{s.Name, ok, s.Detail, strconv.FormatUint(s.Events, 10), last, s.Since.UTC().Format(time.RFC3339)}
}

// K8sStatusNameIndex is the primary index: the name.
var K8sStatusNameIndex = statedb.Index[*K8sStatus, string]{
	Name:       "name",
	FromObject: func(s *K8sStatus) index.KeySet { return index.NewKeySet(index.String(s.Name)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

func NewK8sStatusTable(db *statedb.DB) (statedb.RWTable[*K8sStatus], error) {
	return statedb.NewTable(db, "k8s-status", K8sStatusNameIndex)
}
