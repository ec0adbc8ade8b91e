// Package monitor is the agent's window on what the datapath decides: it is
// the one reader of the events ring buffer (mb_events) the programs write a
// record to for every dropped packet and every new flow they allow, and it
// hands those events, enriched, to whoever subscribes.
//
// A ring buffer has a single consumer position, so there must be exactly one
// reader per node: this cell, not the CLI. Each 64-byte record (maps.Event)
// is decoded and, when somebody listens, enriched from the tables:
//
//	endpoint ID      -> endpoints:  the pod (namespace/name)
//	src/dst identity -> identities: the security labels behind the numbers
//	kernel timestamp -> wall-clock time (bpf_ktime_get_ns is CLOCK_MONOTONIC)
//
// then copied to every subscriber whose filter matches. Each subscriber has
// a bounded queue; one that does not keep up loses events (counted, and
// reported in its stream as a "lost" record), and never slows the reader or
// the other subscribers.
//
// In the endpoint story (docs/endpoint-lifecycle.md) it comes after the
// endpoint is ready: it shows whether the policy that regeneration wrote
// is the one the operator meant.
//
// Tables: reads endpoints and identities; writes none. Serves
// GET /v1/monitor[?type=drop|verdict|all][&endpoint=ID], newline-delimited
// JSON (api/models.MonitorEvent), flushed after every event.
//
// See it working, with an agent running and a policy that drops something:
//
//	membrane monitor                          # every drop and verdict, one line each
//	membrane monitor --type drop --endpoint 12
//	membrane monitor -o json | jq 'select(.reason == "policy-denied")'
//	curl -N --unix-socket /var/run/membrane/membrane.sock 'http://x/v1/monitor?type=drop'
//
// Without subscribers the reader still drains the ring buffer (discarding
// records) so a new subscriber sees fresh events, not a backlog.
package monitor
