package tables

import (
	"fmt"
	"slices"
	"time"
)

// EndpointState is a lifecycle state (Cilium's names). The schema is the
// source of the lifecycle; the API's EndpointState carries the same
// names on the wire and the API edge converts (a test keeps them equal).
type EndpointState string

const (
	StateWaitingForIdentity  EndpointState = "waiting-for-identity"
	StateWaitingToRegenerate EndpointState = "waiting-to-regenerate"
	StateRegenerating        EndpointState = "regenerating"
	StateReady               EndpointState = "ready"
	StateDisconnecting       EndpointState = "disconnecting"
	StateDisconnected        EndpointState = "disconnected"
	StateRestoring           EndpointState = "restoring"
	StateInvalid             EndpointState = "invalid"
	StateNotReady            EndpointState = "not-ready"
)

// StatusEntry is one line of an endpoint's status log.
type StatusEntry struct {
	Timestamp time.Time     `json:"timestamp"`
	State     EndpointState `json:"state"`
	Code      string        `json:"code"` // "ok" or "failure"
	Message   string        `json:"message"`
}

// maxLogEntries bounds an endpoint's status log.
const maxLogEntries = 64

// transitions lists, for each state, the states it may move to. These are
// Cilium's endpoint states; every state but disconnected may also move to
// disconnecting (the endpoint is being deleted).
//
//	restoring -----------------+
//	                           v
//	waiting-for-identity -> waiting-to-regenerate -> regenerating -> ready
//	     ^   |                  ^                        |             |
//	     |   +-> invalid        +------------------------+-------------+
//	     +--------------------- (labels changed) ---------------------+
var transitions = map[EndpointState][]EndpointState{
	StateRestoring:           {StateWaitingForIdentity, StateWaitingToRegenerate},
	StateWaitingForIdentity:  {StateWaitingToRegenerate, StateInvalid, StateNotReady},
	StateWaitingToRegenerate: {StateRegenerating, StateWaitingForIdentity},
	StateRegenerating:        {StateReady, StateWaitingToRegenerate, StateWaitingForIdentity, StateNotReady},
	StateReady:               {StateWaitingToRegenerate, StateWaitingForIdentity, StateNotReady},
	StateNotReady:            {StateWaitingToRegenerate, StateWaitingForIdentity, StateRegenerating},
	StateInvalid:             nil,
	StateDisconnecting:       {StateDisconnected},
	StateDisconnected:        nil,
}

// CanTransition reports whether an endpoint may move from one state to another.
func CanTransition(from, to EndpointState) bool {
	if from == to {
		return true
	}
	if to == StateDisconnecting {
		return from != StateDisconnected
	}
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// ValidState reports whether s is one of the lifecycle states.
func ValidState(s EndpointState) bool {
	_, ok := transitions[s]
	return ok
}

// States lists the lifecycle states, sorted.
func States() []EndpointState {
	out := make([]EndpointState, 0, len(transitions))
	for s := range transitions {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// SetState moves a (cloned) endpoint to a new state and logs why. It
// refuses a transition the lifecycle does not allow.
func (e *Endpoint) SetState(to EndpointState, why string) error {
	if !CanTransition(e.State, to) {
		return fmt.Errorf("endpoint %d: invalid state transition %s -> %s (%s)", e.ID, e.State, to, why)
	}
	changed := e.State != to
	e.State = to
	if changed {
		e.AddLog("ok", why)
	}
	return nil
}

// Relabelled records that the endpoint's labels changed: it goes back to
// waiting-for-identity, so the identity allocator gives it the identity of
// its new labels. One that waits for an identity already, or is being
// restored (it will be judged by its labels anyway), only logs why.
func (e *Endpoint) Relabelled(why string) error {
	if e.State == StateRestoring || e.State == StateWaitingForIdentity {
		e.AddLog("ok", why)
		return nil
	}
	return e.SetState(StateWaitingForIdentity, why)
}

// AddLog appends to the status log, dropping the oldest past the bound.
func (e *Endpoint) AddLog(code, msg string) {
	// A new array of exactly the entries kept: the row's old version
	// shares the old one, and append's doubling would leave every row
	// with up to twice the entries' memory (4 entries in an array of 6
	// after a creation; 64 in one of 128 once the log is full).
	n := min(len(e.Log)+1, maxLogEntries)
	log := make([]StatusEntry, n)
	copy(log, e.Log[len(e.Log)-(n-1):])
	log[n-1] = StatusEntry{Timestamp: time.Now(), State: e.State, Code: code, Message: msg}
	e.Log = log
}
