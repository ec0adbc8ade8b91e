// Package identity is the identity allocator cell: step 5 of the endpoint
// story (docs/endpoint-lifecycle.md#5-labels-and-identity). An endpoint's policy is written against numbers, not labels; this
// cell gives every endpoint the number of its security labels, the same
// number for the same labels, so pods of one workload share an identity.
//
// It reacts to the endpoints table. For each endpoint whose labels are
// resolved (LabelsResolved) and that is not being deleted:
//
//	security labels = labels.Filter(endpoint labels)  drop pod-template-hash & co (--identity-label-filter)
//	identity        = Allocator.Allocate(labels)      same labels => same number; new: 256..65535
//	endpoint row    : Identity = N, state waiting-for-identity -> waiting-to-regenerate
//
// which is what regeneration waits for. A relabelled endpoint moves to the
// identity of its new labels. Nobody counts references: an identity's users
// are the endpoints rows that carry it (EndpointIdentityIndex: as Identity,
// or as DatapathIdentity while a relabelled endpoint's addresses still
// carry the old one), and one that
// no row carries is released, but only once the endpoints table is
// initialized, so a restart never drops a number a restored endpoint (state
// restoring) is about to claim back.
//
// Tables: reads and writes endpoints (Identity, State, status log; nothing
// else); owns identities (the reserved identities 1..10 from start, then
// every cluster identity in use, or in Kubernetes mode every identity of
// the cluster). Without Kubernetes, cluster identities are persisted in
// identities.json in --state-dir, rewritten on every allocation and
// release before the tables show it, so numbers survive a restart.
//
// See it working, with an agent running:
//
//	membrane identity list          # GET /v1/identity: number, labels, endpoints using it
//	membrane identity get 256       # GET /v1/identity/256
//	membrane statedb identities     # the table itself
//	membrane endpoint log 12        # "identity 256 resolved (labels k8s:app=web,...)"
//	cat /var/lib/membrane/identities.json
//
// Relabel a pod (`membrane pod apply`) and its endpoint moves to another
// identity; delete the last pod with a label set and its identity goes.
// testdata/*.txtar replay these stories against the tables.
//
// Backends. Without Kubernetes the Allocator is node-local (the file
// above). In Kubernetes mode (the *client.Clientset of cells/k8s/client
// enabled) the ClusterAllocator replaces it: identities are CiliumIdentity
// objects shared by every node, each label set locked by a claim (a Lease
// membrane-system/membrane-id-<hash> holding the number), so the same
// labels get the same number on every node and concurrent agents make
// exactly one identity (docs/identities.md has the protocol and its
// races). Known labels resolve from informer caches (also with the API
// server down); new ones fail within allocTimeout and are retried. The
// identities table then mirrors every CiliumIdentity of the cluster
// (Source "cluster"); nothing is released locally: the garbage collector
// (gc.go), one agent at a time through leader election on the Lease
// membrane-system/membrane-identity-gc, deletes identities no
// CiliumEndpoint (of another node, from the remote endpoints cell's
// cache) and no local endpoint has used for --identity-gc-grace.
// An endpoint whose identity vanishes from the cluster claims it again.
// In this mode identities.json is neither read nor written.
//
//	kubectl get ciliumidentities
//	kubectl get leases -n membrane-system -l membrane.io/identity-claim
//	membrane identity list          # SOURCE cluster
//	membrane statedb k8s-status     # the ciliumidentities cache
package identity
