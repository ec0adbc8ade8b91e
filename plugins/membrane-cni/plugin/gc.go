package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/membrane-net/membrane/api/client"
)

// GC removes every attachment the agent knows that is not in the runtime's
// cni.dev/valid-attachments: its endpoint, its addresses and its host veth.
// Addresses whose owner is an attachment but that have no endpoint (an ADD
// that died between IPAM and the endpoint) go too. The runtime guarantees
// no ADD or DEL runs during GC, so nothing in flight is mistaken for
// garbage. As the spec asks, GC carries on past errors and reports them all.
func GC(ctx context.Context, args *skel.CmdArgs) error {
	inv, err := begin(args, decodedConf)
	if err != nil {
		return fmt.Errorf("membrane-cni GC: %w", err)
	}
	valid := make(map[Attachment]bool, len(inv.conf.ValidAttachments))
	for _, v := range inv.conf.ValidAttachments {
		valid[Attachment{ContainerID: v.ContainerID, IfName: v.IfName}] = true
	}
	if err := gc(ctx, inv.client, valid); err != nil {
		return fmt.Errorf("membrane-cni GC: %w", err)
	}
	return nil
}

func gc(ctx context.Context, c *client.Client, valid map[Attachment]bool) error {
	eps, err := c.ListEndpoints(ctx)
	if err != nil {
		return fmt.Errorf("listing endpoints: %w", agentError(c.Socket, err))
	}
	var errs []error
	done := map[Attachment]bool{}
	for i := range eps {
		ep := &eps[i]
		if ep.ContainerID == "" || ep.ContainerInterfaceName == "" {
			continue // not a CNI attachment
		}
		att := Attachment{ContainerID: ep.ContainerID, IfName: ep.ContainerInterfaceName}
		if valid[att] {
			continue
		}
		done[att] = true
		errs = append(errs, collect(att, ep.InterfaceName, releaseAttachment(ctx, c, att, ep)))
	}

	rows, err := c.ListIPs(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing addresses: %w", agentError(c.Socket, err)))
		return errors.Join(errs...)
	}
	for _, r := range rows {
		att, ok := ParseOwner(r.Owner)
		if !ok || valid[att] || done[att] {
			continue
		}
		done[att] = true
		errs = append(errs, collect(att, "", releaseAttachment(ctx, c, att, nil)))
	}
	return errors.Join(errs...)
}

// collect finishes one stale attachment: its host veth goes whatever the
// agent said.
func collect(att Attachment, hostIf string, agentErr error) error {
	errs := []error{agentErr}
	names := []string{att.HostVeth()}
	if strings.HasPrefix(hostIf, HostVethPrefix) && hostIf != att.HostVeth() {
		names = append(names, hostIf)
	}
	for _, n := range names {
		if err := deleteLink(n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("attachment %s: %w", att.Owner(), err)
	}
	return nil
}
