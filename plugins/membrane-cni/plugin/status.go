package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/membrane-net/membrane/api/models"
)

// Status reports whether the plugin can serve ADD: the configuration is
// valid and the agent answers /v1/healthz as healthy. Anything else is CNI
// error 50 (plugin not available), which the runtime shows as the network
// not being ready.
func Status(ctx context.Context, args *skel.CmdArgs) error {
	inv, err := begin(args, validConf)
	if err != nil {
		return fmt.Errorf("membrane-cni STATUS: %w", err)
	}
	st, err := inv.client.Healthz(ctx)
	return statusError(inv.conf.Socket, st, err)
}

// statusError is STATUS's verdict on the agent's answer to /v1/healthz:
// nil when it answered healthy, CNI error 50 otherwise.
func statusError(socket string, st *models.Status, err error) error {
	if err != nil {
		return withCode(ErrPluginNotAvailable, fmt.Errorf("membrane-cni STATUS: %w", agentError(socket, err)))
	}
	if !st.Healthy {
		msg := st.Message
		if msg == "" {
			msg = "no reason given"
		}
		return withCode(ErrPluginNotAvailable,
			fmt.Errorf("membrane-cni STATUS: membrane-agent at %s is not healthy: %w (see `membrane status`)", socket, errors.New(msg)))
	}
	return nil
}
