package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/internal/delqueue"
)

// Del tears an attachment down. It is idempotent and needs nothing but the
// attachment: an unknown container, a netns that is gone, an empty
// CNI_NETNS (containerd's second DEL) and a repeated DEL all succeed.
//
// When the agent cannot be reached at all (no socket, connection refused)
// the host veth is still removed and the DEL is queued in the agent's
// state dir (internal/delqueue), which the agent processes at start before
// it serves: the DEL succeeds, so the runtime can forget the pod. It fails,
// naming the socket so the runtime retries, when the DEL cannot be queued
// (the queue is full, the state dir is missing) or the agent holds the
// queue: it is then starting or stopping, or alive but not answering (a
// hung agent does not read a queue until it restarts, so its DEL is not
// queued but retried until the agent answers; the plugin gives it
// DelTimeout).
func Del(ctx context.Context, args *skel.CmdArgs) error {
	inv, err := begin(args, decodedConf)
	if err != nil {
		return fmt.Errorf("membrane-cni DEL: %w", err)
	}
	// The ifindex identifies the attachment the queued DEL is about: see
	// delqueue.Entry.
	hostIndex := 0
	if l, err := netlink.LinkByName(inv.att.HostVeth()); err == nil {
		hostIndex = l.Attrs().Index
	}
	agentErr := releaseAttachment(ctx, inv.client, inv.att, nil)
	linkErr := deleteLink(inv.att.HostVeth())
	if linkErr != nil {
		linkErr = fmt.Errorf("removing the host veth: %w", linkErr)
	}
	if errors.Is(agentErr, client.ErrAgentUnreachable) {
		agentErr = queueDel(inv, args, hostIndex, agentErr)
	}
	if err := errors.Join(agentErr, linkErr); err != nil {
		return fmt.Errorf("membrane-cni DEL for attachment %s: %w", inv.att.Owner(), err)
	}
	return nil
}

// queueDel records the DEL for the agent's next start; nil when it did.
// Otherwise the error says why, after unreachable (the agent's error).
func queueDel(inv *invocation, args *skel.CmdArgs, hostIndex int, unreachable error) error {
	lock, err := delqueue.TryShared(inv.conf.StateDir)
	if err != nil {
		if errors.Is(err, delqueue.ErrHeld) {
			return fmt.Errorf("%w; the agent is starting or stopping, retry", unreachable)
		}
		return fmt.Errorf("%w; and the DEL could not be queued for the agent's start: %v", unreachable, err)
	}
	defer lock.Unlock()
	pod, _ := ParseArgs(args.Args)
	e := &delqueue.Entry{
		Version:     delqueue.Version,
		ContainerID: inv.att.ContainerID,
		IfName:      inv.att.IfName,
		Pod:         pod.Ref(),
		HostIfIndex: hostIndex,
		Queued:      time.Now(),
	}
	if e.Validate() != nil {
		e.Pod = "" // only for the logs: not worth failing over
	}
	if _, err := lock.Enqueue(e); err != nil {
		return fmt.Errorf("%w; and the DEL could not be queued for the agent's start: %v", unreachable, err)
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
