// Package policy is the policy engine cell: step 6 of the endpoint story
// (docs/endpoint-lifecycle.md#6-policy), the part that decides which identities, protocols and
// ports each endpoint may talk to. It turns the rules of the policy-rules
// table into one endpoint-policy row per endpoint, which the loader writes
// into the endpoint's slice of the BPF policy map; regeneration waits for
// that row before an endpoint is ready.
//
//	policy-rules (repository) ─┐
//	identities (allocator) ────┼─> selector cache ─> per-identity policy ─> endpoint-policy (one row per endpoint)
//	endpoints (manager) ───────┘                                          ─> ipcache + identities (CIDR identities)
//
// A selector cache (selectorcache.go) knows which identities each peer
// selector of a rule selects (fromEndpoints, entities, CIDRs) and is kept
// current incrementally as identities come and go and rules add and drop
// selectors. The policy of an identity (compute.go, mapstate.go) is
// computed once and shared by its endpoints; a change recomputes only the
// identities it can affect (controller.go): those a changed rule selects,
// those whose rules use a selector whose selection changed, and those of
// endpoints that appeared or changed identity. A row is rewritten only if
// what it asks of the datapath, or the policy revision, changed.
//
// Rules with CIDR peers get a node-local identity per prefix. One type
// owns them (cidrIdentities, cidridentities.go; the selectors that match
// them are in cidr.go): it writes an ipcache row (prefix -> identity,
// source cidr-policy) and an identities row (cidr:PREFIX) for each, and
// removes both when no rule uses the prefix any more. The numbers are
// saved in the state directory (cidr-identities.json, cidrstate.go)
// before the rows are committed, and reserved for their prefixes while
// the restored rules are processed after a restart: the kernel's ipcache
// map outlives the agent, and must not disagree with the recomputed
// policies.
//
// The policy revision each row reports comes from the policy-revision
// table, which the repository writes with the rules; the engine applies
// it once it has processed the rules that came with it (policyRevision in
// controller.go).
//
// Nothing is computed before the policy-rules table (the repository's
// restore) and the identities table are initialized, and the engine holds
// the endpoint-policy and ipcache tables' initialization until the first
// computation is written, so that a restart never prunes or enforces a
// half-computed policy.
//
// The semantics (default deny per direction, deny precedence, entities,
// CIDRs, --enable-policy, --allow-localhost) are Cilium's; docs/policy.md,
// "Enforcement semantics", spells them out, and testdata/*.txtar show
// them as sequences of table rows.
//
// See it working, with an agent running:
//
//	membrane policy import -f web.yaml
//	membrane statedb endpoint-policy        # one row per endpoint: enforcement, entry count, revision
//	membrane bpf policy get 12              # the entries, as the datapath has them
//	membrane policy trace --src-labels k8s:app=db --dst-labels k8s:app=web --dport 80/TCP
//	membrane status                         # the engine's health: problems in rules, write failures
package policy
