package tables

import (
	"fmt"
	"time"

	"github.com/membrane-net/membrane/api/models"
)

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
var transitions = map[models.EndpointState][]models.EndpointState{
	models.StateRestoring:           {models.StateWaitingForIdentity, models.StateWaitingToRegenerate},
	models.StateWaitingForIdentity:  {models.StateWaitingToRegenerate, models.StateInvalid, models.StateNotReady},
	models.StateWaitingToRegenerate: {models.StateRegenerating, models.StateWaitingForIdentity},
	models.StateRegenerating:        {models.StateReady, models.StateWaitingToRegenerate, models.StateWaitingForIdentity, models.StateNotReady},
	models.StateReady:               {models.StateWaitingToRegenerate, models.StateWaitingForIdentity, models.StateNotReady},
	models.StateNotReady:            {models.StateWaitingToRegenerate, models.StateWaitingForIdentity, models.StateRegenerating},
	models.StateInvalid:             nil,
	models.StateDisconnecting:       {models.StateDisconnected},
	models.StateDisconnected:        nil,
}

// CanTransition reports whether an endpoint may move from one state to another.
func CanTransition(from, to models.EndpointState) bool {
	if from == to {
		return true
	}
	if to == models.StateDisconnecting {
		return from != models.StateDisconnected
	}
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// ValidState reports whether s is one of the lifecycle states.
func ValidState(s models.EndpointState) bool {
	_, ok := transitions[s]
	return ok
}

// SetState moves a (cloned) endpoint to a new state and logs why. It
// refuses a transition the lifecycle does not allow.
func (e *Endpoint) SetState(to models.EndpointState, why string) error {
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

// AddLog appends to the status log, dropping the oldest past the bound.
func (e *Endpoint) AddLog(code, msg string) {
	entry := models.StatusEntry{Timestamp: time.Now(), State: e.State, Code: code, Message: msg}
	log := append(e.Log[:len(e.Log):len(e.Log)], entry)
	if len(log) > maxLogEntries {
		log = log[len(log)-maxLogEntries:]
	}
	e.Log = log
}
