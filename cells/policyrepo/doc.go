// Package policyrepo is the policy repository: the cell that owns the
// policy-rules table. Operators hand it policy documents in Cilium's
// format (PUT /v1/policy, `membrane policy import`), it checks them with
// policy/api.Parse, and writes the rules of a document into the table in
// one transaction under a new policy revision. The policy engine reacts to
// those rows; endpoints report the revision their datapath enforces.
//
//	PUT    /v1/policy   body: JSON or YAML (rules, CiliumNetworkPolicy, List, "---" stream)
//	                    -> 200 {"revision": N, "rules": COUNT}; 400 naming the field; 413 past 1 MiB
//	GET    /v1/policy   -> {"revision": N, "rules": [{key, revision, namespace, clusterwide, source, labels, rule}, ...]}
//	DELETE /v1/policy   body: {"labels": ["k8s:io.cilium.k8s.policy.name=web", ...]} deletes the
//	                    API's rules carrying all of them; no body deletes all the API's rules
//	                    -> 200 {"revision": N, "deleted": COUNT}; 404 when nothing matches
//
// A document is all or nothing: any problem and nothing is imported.
// Re-importing a CiliumNetworkPolicy (or CCNP) replaces the rules the
// previous import of the same object (kind, namespace, name) left, as
// kubectl apply would; plain rules are added.
//
// Every rule has a source (the rows' Source): "api" for the rules of
// PUT /v1/policy, "k8s" for those of the cluster's objects, which the
// Kubernetes policy watcher (cells/k8s/policies) writes through
// SetObjects. Each source replaces and deletes only its own rules: an
// import of a CNP does not replace the cluster's CNP of the same name,
// DELETE /v1/policy removes only the API's rules, and the watcher's
// convergence after a restart leaves the API's alone.
//
// The revision starts at 0 (no policy ever imported) and every successful
// import or delete adds one, including a delete that empties the table.
// Rules and revision are persisted in the state directory (policy.json,
// written before the transaction commits, so a failed write changes
// nothing) and restored at start; the table's initializer
// "policy-repository" completes only after the restore, so the engine can
// wait for tables.PolicyRule's Initialized before computing anything.
//
// The revision is a row of the policy-revision table
// (tables.PolicyRevision), written in the transaction that writes the
// rules, so every reader finds it next to the rules without asking the
// repository: one that reads rows and revision with the same transaction
// gets a consistent pair (Repository.RevisionAt, GET /v1/policy); one that
// follows the rules' changes (the policy engine) compares the row's
// RulesRevision with the revision of the last change it processed.
//
// Try it:
//
//	membrane policy import -f web.yaml
//	membrane statedb policy-rules
//	membrane statedb policy-revision
//	curl --unix-socket /var/run/membrane/membrane.sock http://x/v1/policy
package policyrepo
