package nodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/vishvananda/netlink"
	k8serrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	k8scell "github.com/membrane-net/membrane/cells/k8s/client"
	"github.com/membrane-net/membrane/cells/k8s/crds"
	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	"github.com/membrane-net/membrane/k8s/client"
)

// OwnResource is the k8s-status row of this node's CiliumNode.
const OwnResource = "ciliumnode"

// recheck bounds how long a CiliumNode changed behind the agent's back
// (or an address of the node that changed) goes unnoticed if no event
// says so.
const recheck = 5 * time.Minute

// announcer keeps this node's CiliumNode as the flags say.
type announcer struct {
	cs         *client.Clientset
	registered *crds.Registered
	status     *k8scell.Status
	log        *slog.Logger
	nodeIPs    []netip.Addr   // --node-ip; empty: detect
	podCIDRs   []netip.Prefix // --pod-cidr, --pod-cidr-v6
	fromNode   *nodePodCIDRs  // --ipam=kubernetes: the CIDRs come from there
	kick       chan struct{}  // the watcher saw this node's object change
}

func (a *announcer) run(ctx context.Context, health cell.Health) error {
	select {
	case <-a.registered.Done():
	case <-ctx.Done():
		return nil
	}
	if a.fromNode != nil {
		// The IPAM reads them at start; the agent stops if it cannot.
		cidrs, ok := a.fromNode.prefixes(ctx)
		if !ok {
			return nil
		}
		a.podCIDRs = cidrs
	}
	backoff := time.Second
	for {
		wait := recheck
		err := a.ensure(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.status.Written(OwnResource, "node "+a.cs.NodeName, err)
		if err != nil {
			// The API server may be away: the node's pods need nothing
			// from it, so the agent stays healthy and says why.
			health.OK(fmt.Sprintf("CiliumNode %s not written yet (retrying): %v", a.cs.NodeName, err))
			wait, backoff = backoff, min(2*backoff, 30*time.Second)
		} else {
			health.OK("CiliumNode " + a.cs.NodeName + " up to date")
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		case <-time.After(wait):
		}
	}
}

// ensure creates or updates this node's CiliumNode.
func (a *announcer) ensure(ctx context.Context) error {
	ips := a.nodeIPs
	if len(ips) == 0 {
		var err error
		if ips, err = DefaultRouteAddrs(); err != nil {
			return err
		}
	}
	want := Spec(ips, a.podCIDRs)
	api := a.cs.CiliumV2.CiliumNodes()
	have, err := api.Get(ctx, a.cs.NodeName, metav1.GetOptions{})
	switch {
	case k8serrors.IsNotFound(err):
		obj := &v2.CiliumNode{ObjectMeta: metav1.ObjectMeta{Name: a.cs.NodeName}, Spec: want}
		if _, err := api.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !k8serrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CiliumNode %s: %w", a.cs.NodeName, err)
		}
		a.log.Info("CiliumNode created", "node", a.cs.NodeName, "addresses", ips, "podCIDRs", a.podCIDRs)
	case err != nil:
		return fmt.Errorf("reading CiliumNode %s: %w", a.cs.NodeName, err)
	case !reflect.DeepEqual(have.Spec, want):
		upd := have.DeepCopy()
		upd.Spec = want
		if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating CiliumNode %s: %w", a.cs.NodeName, err)
		}
		a.log.Info("CiliumNode updated", "node", a.cs.NodeName, "addresses", ips, "podCIDRs", a.podCIDRs)
	}
	return nil
}

// DefaultRouteAddrs are the addresses of the interfaces holding the
// default routes of this network namespace, one per family: what other
// nodes most likely reach this one at.
func DefaultRouteAddrs() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam)
		if err != nil {
			return nil, fmt.Errorf("listing routes: %w", err)
		}
	routes:
		for _, r := range routes {
			if ones, _ := maskOf(r); ones != 0 || r.LinkIndex == 0 {
				continue
			}
			link, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				continue
			}
			addrs, err := netlink.AddrList(link, fam)
			if err != nil {
				continue
			}
			for _, ad := range addrs {
				ip, ok := netip.AddrFromSlice(ad.IP)
				if ok && ip.Unmap().IsGlobalUnicast() {
					out = append(out, ip.Unmap())
					break routes
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no address to announce: no interface holds a default route with a global address; set --node-ip")
	}
	return out, nil
}

// maskOf is the prefix length of a route's destination (0 for a default
// route, whose Dst netlink leaves nil or 0.0.0.0/0).
func maskOf(r netlink.Route) (int, int) {
	if r.Dst == nil {
		return 0, 0
	}
	return r.Dst.Mask.Size()
}
