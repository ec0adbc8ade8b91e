package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/membrane-net/membrane/api/client"
)

// ErrPluginNotAvailable is the CNI 1.1 STATUS code for "the plugin cannot
// service ADD requests" (the runtime then reports the network as not ready).
const ErrPluginNotAvailable uint = 50

// codedError gives an error the CNI error code the runtime sees.
type codedError struct {
	code uint
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code uint, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// CodeOf is the CNI error code of err: the outermost code along the chain of
// wrapped errors, so a step can re-classify what it called. Errors without a
// code are ErrInternal, as skel would report them.
func CodeOf(err error) uint {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return types.ErrInternal
}

// toCNI turns err into the *types.Error skel prints for the runtime.
func toCNI(err error) error {
	if err == nil {
		return nil
	}
	return types.NewError(CodeOf(err), err.Error(), "")
}

// AgentUnreachableError says the agent's socket did not answer at all.
type AgentUnreachableError struct {
	Socket string
	Err    error
}

func (e *AgentUnreachableError) Error() string {
	cause := e.Err.Error()
	var se *os.SyscallError
	if errors.As(e.Err, &se) {
		cause = se.Error() // "connect: no such file or directory"
	}
	return fmt.Sprintf("membrane-agent not reachable at %s: is it running? (%s)", e.Socket, cause)
}

func (e *AgentUnreachableError) Unwrap() error { return e.Err }

// agentError explains a failed API call in an operator's terms: which
// socket, whether retrying can help.
func agentError(socket string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrAgentUnreachable):
		return withCode(types.ErrTryAgainLater, &AgentUnreachableError{Socket: socket, Err: err})
	case errors.Is(err, context.DeadlineExceeded):
		return withCode(types.ErrTryAgainLater,
			fmt.Errorf("membrane-agent at %s did not answer in time: %w", socket, err))
	case client.IsStatus(err, http.StatusTooManyRequests):
		return withCode(types.ErrTryAgainLater,
			fmt.Errorf("membrane-agent is rate limiting endpoint changes, retry later: %w", err))
	case client.IsStatus(err, http.StatusGatewayTimeout):
		return withCode(types.ErrTryAgainLater,
			fmt.Errorf("membrane-agent timed out building the endpoint (see `membrane endpoint log` and the agent's log): %w", err))
	}
	return err
}

// allocateError explains a failed POST /v1/ipam.
func allocateError(socket string, err error) error {
	if client.IsStatus(err, http.StatusServiceUnavailable) {
		return fmt.Errorf("no free address in the agent's pod CIDR: %w "+
			"(delete unused pods or give membrane-agent a larger --pod-cidr)", err)
	}
	return agentError(socket, err)
}

// putEndpointError explains a failed PUT of att's endpoint.
func putEndpointError(socket string, att Attachment, err error) error {
	if client.IsStatus(err, http.StatusConflict) {
		return fmt.Errorf("the agent already has an endpoint for this attachment or address: %w "+
			"(if that pod is gone, DEL it or run `membrane endpoint delete %s`)", err, att.EndpointID())
	}
	return agentError(socket, err)
}

// endpointMayExist says whether the agent may have created an endpoint
// whose PUT failed with err, so that the rollback must look for it: after a
// 5xx or no answer at all it may (the agent removes a half-made endpoint
// itself on a sync-build timeout, but a lost answer says nothing); after
// any other answer it did not.
func endpointMayExist(err error) bool {
	var ae *client.APIError
	return !errors.As(err, &ae) || ae.Code >= 500
}

// notFound reports a 404 from the agent: for DEL and GC, already gone.
func notFound(err error) bool { return client.IsStatus(err, http.StatusNotFound) }
