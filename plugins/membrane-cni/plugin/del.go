package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

// Del tears an attachment down. It is idempotent and needs nothing but the
// attachment: an unknown container, a netns that is gone, an empty
// CNI_NETNS (containerd's second DEL) and a repeated DEL all succeed. When
// the agent cannot be reached the host veth is still removed, and the error
// names the socket so the runtime's retry can finish the job.
func Del(ctx context.Context, args *skel.CmdArgs) error {
	inv, err := begin(args, decodedConf)
	if err != nil {
		return fmt.Errorf("membrane-cni DEL: %w", err)
	}
	agentErr := releaseAttachment(ctx, inv.client, inv.att, nil)
	linkErr := deleteLink(inv.att.HostVeth())
	if linkErr != nil {
		linkErr = fmt.Errorf("removing the host veth: %w", linkErr)
	}
	if err := errors.Join(agentErr, linkErr); err != nil {
		return fmt.Errorf("membrane-cni DEL for attachment %s: %w", inv.att.Owner(), err)
	}
	return nil
}

// releaseAttachment deletes the attachment's endpoint and releases the
// addresses the agent's IPAM records for it. ep, if known, saves a lookup.
// Not found is success: someone (an earlier DEL, GC, the operator) was first.
func releaseAttachment(ctx context.Context, c *client.Client, att Attachment, ep *models.Endpoint) error {
	id := att.EndpointID()
	if ep != nil {
		id = strconv.Itoa(int(ep.ID))
	}
	if err := c.DeleteEndpoint(ctx, id); err != nil && !notFound(err) {
		return fmt.Errorf("deleting endpoint %s: %w", id, agentError(c.Socket, err))
	}
	// The endpoint is gone, so its addresses can go: release what the IPAM
	// holds for this owner.
	owned, err := ownedIPs(ctx, c, att.Owner())
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", att.Owner(), agentError(c.Socket, err))
	}
	var errs []error
	for _, ip := range owned {
		if err := c.ReleaseIP(ctx, ip); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("releasing %s: %w", ip, agentError(c.Socket, err)))
		}
	}
	return errors.Join(errs...)
}

// ownedIPs lists the addresses IPAM holds for owner. The agent filters by
// owner; the plugin checks again, since releasing somebody else's address
// would be far worse than one more request.
func ownedIPs(ctx context.Context, c *client.Client, owner string) ([]string, error) {
	var rows []models.IPAMAllocation
	if err := c.Get(ctx, "/v1/ipam?owner="+url.QueryEscape(owner), &rows); err != nil {
		return nil, err
	}
	var ips []string
	for _, r := range rows {
		if r.Owner == owner {
			ips = append(ips, r.IP)
		}
	}
	return ips, nil
}
