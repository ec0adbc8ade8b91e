package plugin

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

// RollbackTimeout bounds the cleanup after a failed ADD; it gets its own
// deadline because the ADD's may be what ran out.
const RollbackTimeout = 15 * time.Second

// Add sets up an attachment and returns the result in the configuration's
// CNI version. On any failure everything done so far is undone (endpoint,
// veth, addresses) and the error names the pod, the step and what to do.
func Add(ctx context.Context, args *skel.CmdArgs) (types.Result, error) {
	inv, err := begin(args, validConf)
	if err != nil {
		return nil, err
	}
	pod, err := ParseArgs(args.Args)
	if err != nil {
		return nil, withCode(types.ErrInvalidEnvironmentVariables, err)
	}
	a := &adder{
		conf:   inv.conf,
		pod:    pod,
		att:    inv.att,
		netns:  args.Netns,
		client: inv.client,
	}
	res, err := a.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("membrane-cni ADD %s: %w", a.describe(), err)
	}
	return res, nil
}

type adder struct {
	conf   *NetConf
	pod    PodArgs
	att    Attachment
	netns  string
	client *client.Client
	undo   rollback
}

// describe names the attachment for error messages.
func (a *adder) describe() string {
	if ref := a.pod.Ref(); ref != "" {
		return fmt.Sprintf("for pod %s (attachment %s)", ref, a.att.Owner())
	}
	return "for attachment " + a.att.Owner()
}

func (a *adder) run(ctx context.Context) (res types.Result, err error) {
	netns, err := ns.GetNS(a.netns)
	if err != nil {
		return nil, withCode(types.ErrInvalidNetNS, fmt.Errorf("opening netns %q: %w", a.netns, err))
	}
	defer netns.Close()

	defer func() {
		if err == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.Background(), RollbackTimeout)
		defer cancel()
		if rerr := a.undo.run(rctx); rerr != nil {
			err = fmt.Errorf("%w (rolling back also failed: %v; run DEL for this attachment)", err, rerr)
		}
	}()

	addrs, err := a.allocate(ctx)
	if err != nil {
		return nil, fmt.Errorf("allocating an address: %w", err)
	}
	for _, ad := range addrs {
		if ad.IP.Is6() && a.conf.mtu() < MinMTUv6 {
			return nil, withCode(types.ErrInvalidNetworkConfig, fmt.Errorf(
				"invalid network configuration %q: \"mtu\" %d is below IPv6's minimum of %d, and the agent hands out IPv6 addresses (--pod-cidr-v6)",
				a.conf.Name, a.conf.mtu(), MinMTUv6))
		}
	}

	pair, err := createVeth(a.att.HostVeth(), a.att.IfName, a.conf.mtu(), netns)
	if errors.Is(err, ErrHostVethExists) {
		pair, err = a.replaceOrphanVeth(ctx, netns)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the veth pair: %w", err)
	}
	a.undo.push("deleting veth "+pair.HostName, func(context.Context) error { return deleteLink(pair.HostName) })

	if err := configurePod(netns, pair, addrs); err != nil {
		return nil, fmt.Errorf("configuring %s in netns %s: %w", a.att.IfName, a.netns, err)
	}
	if err := configureHost(pair, a.att.Owner(), addrs); err != nil {
		return nil, fmt.Errorf("configuring host veth %s: %w", pair.HostName, err)
	}
	if err := enableForwarding(pair.HostName, addrs); err != nil {
		return nil, fmt.Errorf("enabling forwarding: %w", err)
	}

	if err := a.createEndpoint(ctx, pair, addrs); err != nil {
		return nil, fmt.Errorf("creating the endpoint: %w", err)
	}

	result := a.result(pair, addrs)
	res, err = result.GetAsVersion(cniVersion(a.conf))
	if err != nil {
		return nil, withCode(types.ErrIncompatibleCNIVersion, fmt.Errorf("converting the result: %w", err))
	}
	return res, nil
}

// cniVersion is the configuration's version; none means 0.1.0 (CNI spec).
func cniVersion(c *NetConf) string {
	if c.CNIVersion == "" {
		return "0.1.0"
	}
	return c.CNIVersion
}

// allocate asks the agent for the pod's addresses (every family the agent
// serves) and registers their release with the rollback.
func (a *adder) allocate(ctx context.Context) ([]podAddr, error) {
	req := &models.IPAMRequest{Owner: a.att.Owner(), Pod: a.pod.Ref()}
	resp, err := a.client.AllocateIP(ctx, req)
	if err != nil {
		return nil, allocateError(a.conf.Socket, err)
	}
	var addrs []podAddr
	var bad error
	for _, fam := range []*models.IPAMAddress{resp.IPv4, resp.IPv6} {
		if fam == nil {
			continue
		}
		ip := fam.IP
		a.undo.push("releasing "+ip, func(ctx context.Context) error {
			if err := a.client.ReleaseIP(ctx, ip); err != nil && !notFound(err) {
				return agentError(a.conf.Socket, err)
			}
			return nil
		})
		pa, err := parseIPAMAddress(fam)
		if err != nil {
			bad = errors.Join(bad, err)
			continue
		}
		addrs = append(addrs, pa)
	}
	if bad != nil {
		return nil, fmt.Errorf("the agent answered with an unusable address: %w", bad)
	}
	if len(addrs) == 0 {
		return nil, errors.New("the agent answered without any address")
	}
	return addrs, nil
}

func parseIPAMAddress(m *models.IPAMAddress) (podAddr, error) {
	ip, err := netip.ParseAddr(m.IP)
	if err != nil {
		return podAddr{}, fmt.Errorf("ip: %w", err)
	}
	gw, err := netip.ParseAddr(m.Gateway)
	if err != nil {
		return podAddr{}, fmt.Errorf("gateway of %s: %w", ip, err)
	}
	if ip.Is4() != gw.Is4() || ip == gw {
		return podAddr{}, fmt.Errorf("gateway %s does not fit address %s", gw, ip)
	}
	return podAddr{IP: ip.Unmap(), Router: gw.Unmap()}, nil
}

// MaxRateLimitRetries is how often a PUT the agent rate limited (429, after
// its own bounded queueing) is retried before the ADD gives up.
const MaxRateLimitRetries = 4

// createEndpoint registers the attachment with the agent and waits (sync
// build) until the agent has realised it.
func (a *adder) createEndpoint(ctx context.Context, p *vethPair, addrs []podAddr) error {
	req := &models.EndpointChangeRequest{
		ContainerID:            a.att.ContainerID,
		ContainerInterfaceName: a.att.IfName,
		InterfaceName:          p.HostName,
		InterfaceIndex:         int64(p.HostIndex),
		Mac:                    p.ContMAC.String(),
		HostMac:                p.HostMAC.String(),
		Addressing:             &models.AddressPair{},
		K8sNamespace:           a.pod.Namespace,
		K8sPodName:             a.pod.Name,
		K8sUID:                 a.pod.UID,
		NetworkNamespace:       a.netns,
		SyncBuildEndpoint:      true,
	}
	for _, ad := range addrs {
		if ad.IP.Is4() {
			req.Addressing.IPv4 = ad.IP.String()
		} else {
			req.Addressing.IPv6 = ad.IP.String()
		}
	}
	var ep *models.Endpoint
	var err error
	for attempt := 0; ; attempt++ {
		ep, err = a.client.PutEndpoint(ctx, "0", req)
		if !client.IsStatus(err, http.StatusTooManyRequests) || attempt == MaxRateLimitRetries {
			break
		}
		backoff := time.Duration(50<<attempt)*time.Millisecond + rand.N(50*time.Millisecond)
		if !sleep(ctx, backoff) {
			break
		}
	}
	if err == nil {
		id := strconv.Itoa(int(ep.ID))
		a.undo.push("deleting endpoint "+id, func(ctx context.Context) error {
			if err := a.client.DeleteEndpoint(ctx, id); err != nil && !notFound(err) {
				return agentError(a.conf.Socket, err)
			}
			return nil
		})
		return nil
	}
	if endpointMayExist(err) {
		// Remove it if it is ours, i.e. on our veth.
		a.undo.push("deleting a possibly created endpoint", func(ctx context.Context) error {
			return a.deleteOurEndpoint(ctx, p)
		})
	}
	return putEndpointError(a.conf.Socket, a.att, err)
}

// replaceOrphanVeth handles a host veth that is already there. If the
// agent has an endpoint for the attachment, the attachment is set up and
// the ADD fails (DEL it first). If it has none, the veth is what an
// earlier ADD left when it died half-way (the agent was killed, the node
// lost power): a retried ADD must succeed, so the leftover is deleted
// (with it, its pod end) and the pair made anew.
func (a *adder) replaceOrphanVeth(ctx context.Context, netns ns.NetNS) (*vethPair, error) {
	host := a.att.HostVeth()
	_, err := a.client.GetEndpoint(ctx, a.att.EndpointID())
	if err == nil {
		return nil, fmt.Errorf("%s: %w: the attachment is already set up; DEL it before adding it again", host, ErrHostVethExists)
	}
	if !notFound(err) {
		return nil, fmt.Errorf("%s: %w, and asking the agent whether it is in use failed: %w", host, ErrHostVethExists, agentError(a.conf.Socket, err))
	}
	if err := deleteLink(host); err != nil {
		return nil, fmt.Errorf("removing the leftover host veth of an earlier ADD: %w", err)
	}
	return createVeth(host, a.att.IfName, a.conf.mtu(), netns)
}

// deleteOurEndpoint removes the attachment's endpoint only if it is the one
// on the veth this ADD made, never one an earlier ADD left.
func (a *adder) deleteOurEndpoint(ctx context.Context, p *vethPair) error {
	ep, err := a.client.GetEndpoint(ctx, a.att.EndpointID())
	if notFound(err) {
		return nil
	}
	if err != nil {
		return agentError(a.conf.Socket, err)
	}
	if ep.InterfaceIndex != p.HostIndex || ep.InterfaceName != p.HostName {
		return nil
	}
	if err := a.client.DeleteEndpoint(ctx, strconv.Itoa(int(ep.ID))); err != nil && !notFound(err) {
		return agentError(a.conf.Socket, err)
	}
	return nil
}

// result is what ADD reports: the host veth, the pod's interface in its
// sandbox, the addresses on the pod's interface with their gateway and the
// default routes.
func (a *adder) result(p *vethPair, addrs []podAddr) *current.Result {
	mtu := a.conf.mtu()
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: p.HostName, Mac: p.HostMAC.String(), Mtu: mtu},
			{Name: p.ContName, Mac: p.ContMAC.String(), Mtu: mtu, Sandbox: a.netns},
		},
		DNS: a.conf.DNS,
	}
	for _, ad := range addrs {
		r.IPs = append(r.IPs, &current.IPConfig{
			Interface: current.Int(1),
			Address:   *ad.ipNet(),
			Gateway:   ad.Router.AsSlice(),
		})
		r.Routes = append(r.Routes, &types.Route{
			Dst: *ad.defaultNet(),
			GW:  ad.Router.AsSlice(),
		})
	}
	return r
}

// rollback undoes an ADD's steps, last first.
type rollback struct {
	steps []rollbackStep
}

type rollbackStep struct {
	what string
	do   func(context.Context) error
}

func (r *rollback) push(what string, do func(context.Context) error) {
	r.steps = append(r.steps, rollbackStep{what, do})
}

// run runs every step even if some fail and reports what failed.
func (r *rollback) run(ctx context.Context) error {
	var errs []error
	for i := len(r.steps) - 1; i >= 0; i-- {
		if err := r.steps[i].do(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.steps[i].what, err))
		}
	}
	r.steps = nil
	return errors.Join(errs...)
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
