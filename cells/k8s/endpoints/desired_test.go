package endpoints

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

type fixture struct {
	db         *statedb.DB
	endpoints  statedb.RWTable[*tables.Endpoint]
	pods       statedb.RWTable[*tables.Pod]
	identities statedb.RWTable[*tables.Identity]
	ceps       statedb.RWTable[*tables.CiliumEndpoint]
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{db: statedb.New()}
	var err error
	if f.endpoints, err = tables.NewEndpointsTable(f.db); err != nil {
		t.Fatal(err)
	}
	if f.pods, err = tables.NewPodsTable(f.db); err != nil {
		t.Fatal(err)
	}
	if f.identities, err = tables.NewIdentitiesTable(f.db); err != nil {
		t.Fatal(err)
	}
	if f.ceps, err = tables.NewCiliumEndpointsTable(f.db); err != nil {
		t.Fatal(err)
	}
	webLabels, _ := labels.ParseList([]string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod"}, "")
	apiLabels, _ := labels.ParseList([]string{"k8s:app=api", "k8s:io.kubernetes.pod.namespace=prod"}, "")
	wtxn := f.db.WriteTxn(f.identities)
	f.identities.Insert(wtxn, &tables.Identity{ID: 300, Labels: webLabels})
	f.identities.Insert(wtxn, &tables.Identity{ID: 301, Labels: apiLabels})
	wtxn.Commit()
	return f
}

func (f *fixture) src() sources {
	return sources{endpoints: f.endpoints, pods: f.pods, identities: f.identities}
}

func (f *fixture) put(rows ...any) {
	wtxn := f.db.WriteTxn(f.endpoints, f.pods)
	for _, r := range rows {
		switch r := r.(type) {
		case *tables.Endpoint:
			f.endpoints.Insert(wtxn, r)
		case *tables.Pod:
			f.pods.Insert(wtxn, r)
		}
	}
	wtxn.Commit()
}

func (f *fixture) desired() map[string]*tables.CiliumEndpoint {
	return f.src().desiredRows(f.db.ReadTxn())
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func k8sPod(name, uid string) *tables.Pod {
	return &tables.Pod{Namespace: "prod", Name: name, UID: uid, Labels: map[string]string{"app": "web"}, Source: "k8s"}
}

// readyEndpoint is an endpoint of prod/pod the datapath serves with
// identity 300.
func readyEndpoint(id uint16, pod string) *tables.Endpoint {
	return &tables.Endpoint{
		ID: id, ContainerID: "c" + pod, ContainerIfName: "eth0",
		K8sNamespace: "prod", K8sPodName: pod,
		IPv4: netip.MustParseAddr("10.0.0.7"), IPv6: netip.MustParseAddr("fd00::7"),
		Identity: 300, DatapathIdentity: 300, State: tables.StateReady,
		IngressEnforced: true, Created: t0,
	}
}

// A ready endpoint of a Pod object of this node has a CEP that says what
// `kubectl get cep` shows and who owns it.
func TestDesiredReadyEndpoint(t *testing.T) {
	f := newFixture(t)
	f.put(k8sPod("web-0", "uid-1"), readyEndpoint(12, "web-0"))
	got := f.desired()["prod/web-0"]
	want := &tables.CiliumEndpoint{
		Namespace: "prod", Name: "web-0", PodUID: "uid-1", EndpointID: 12,
		Identity: 300, IdentityLabels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod"},
		IPv4: netip.MustParseAddr("10.0.0.7"), IPv6: netip.MustParseAddr("fd00::7"),
		State: tables.StateReady, IngressEnforcing: true,
	}
	if got == nil || !got.SameObject(want) {
		t.Fatalf("desired CEP\n got %+v\nwant %+v", got, want)
	}
}

// Endpoints the cluster does not see: not served yet, being deleted, of
// a pod that is not a Pod object of this node, of an earlier pod of the
// same name, or whose pod is unknown.
func TestDesiredNoCEP(t *testing.T) {
	for name, setup := range map[string]func(*fixture){
		"not ready yet": func(f *fixture) {
			ep := readyEndpoint(1, "web-0")
			ep.DatapathIdentity, ep.State = 0, tables.StateWaitingToRegenerate
			f.put(k8sPod("web-0", "uid-1"), ep)
		},
		"CNI DEL": func(f *fixture) {
			ep := readyEndpoint(1, "web-0")
			ep.State = tables.StateDisconnecting
			f.put(k8sPod("web-0", "uid-1"), ep)
		},
		"pod from the API": func(f *fixture) {
			p := k8sPod("web-0", "uid-1")
			p.Source = "api"
			f.put(p, readyEndpoint(1, "web-0"))
		},
		"pod without UID": func(f *fixture) {
			f.put(k8sPod("web-0", ""), readyEndpoint(1, "web-0"))
		},
		"endpoint of an earlier pod": func(f *fixture) {
			ep := readyEndpoint(1, "web-0")
			ep.K8sUID = "uid-old"
			f.put(k8sPod("web-0", "uid-new"), ep)
		},
		"pod unknown": func(f *fixture) { f.put(readyEndpoint(1, "web-0")) },
		"no pod name": func(f *fixture) {
			ep := readyEndpoint(1, "")
			ep.K8sNamespace = ""
			f.put(ep)
		},
		"identity not restored yet": func(f *fixture) {
			ep := readyEndpoint(1, "web-0")
			ep.Identity, ep.DatapathIdentity = 999, 999
			f.put(k8sPod("web-0", "uid-1"), ep)
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			setup(f)
			if got := f.desired(); len(got) != 0 {
				t.Errorf("desired CEPs %v, want none", got)
			}
		})
	}
}

// What the cluster sees does not move with the transient steps of a
// regeneration, a restart's restore or a relabel: the datapath keeps
// serving the endpoint with its identity meanwhile. It moves when the
// datapath switches identity or fails.
func TestDesiredStableThroughTransients(t *testing.T) {
	f := newFixture(t)
	f.put(k8sPod("web-0", "uid-1"), readyEndpoint(12, "web-0"))
	base := f.desired()["prod/web-0"]
	for _, st := range []tables.EndpointState{tables.StateWaitingToRegenerate, tables.StateRegenerating, tables.StateRestoring, tables.StateWaitingForIdentity} {
		ep := readyEndpoint(12, "web-0")
		ep.State = st
		ep.Identity = 301 // relabelled, not enforced yet
		f.put(ep)
		if got := f.desired()["prod/web-0"]; got == nil || !got.SameObject(base) {
			t.Errorf("state %s, new identity not enforced yet: CEP %+v, want unchanged %+v", st, got, base)
		}
	}

	ep := readyEndpoint(12, "web-0")
	ep.Identity, ep.DatapathIdentity = 301, 301
	f.put(ep)
	if got := f.desired()["prod/web-0"]; got.Identity != 301 || got.IdentityLabels[0] != "k8s:app=api" {
		t.Errorf("identity switched in the datapath: CEP %+v, want identity 301 (app=api)", got)
	}

	ep = readyEndpoint(12, "web-0")
	ep.State = tables.StateNotReady
	f.put(ep)
	if got := f.desired()["prod/web-0"]; got.State != tables.StateNotReady {
		t.Errorf("regeneration failed: CEP state %s, want not-ready", got.State)
	}
}

// A pod with two endpoints (the runtime replaced its sandbox) is
// described by the newest.
func TestDesiredNewestEndpoint(t *testing.T) {
	f := newFixture(t)
	old := readyEndpoint(3, "web-0")
	newer := readyEndpoint(9, "web-0")
	newer.ContainerID, newer.Created = "c2", t0.Add(time.Minute)
	newer.IPv4 = netip.MustParseAddr("10.0.0.8")
	newer.IPv6 = netip.Addr{}
	f.put(k8sPod("web-0", "uid-1"), old, newer)
	got := f.desired()["prod/web-0"]
	if got.EndpointID != 9 || got.IPv4.String() != "10.0.0.8" || got.IPv6.IsValid() {
		t.Errorf("CEP %+v, want endpoint 9 (10.0.0.8, no IPv6)", got)
	}
}

// The controller writes only rows that changed, Pending for the
// reconciler, deletes rows no longer wanted, and declares the table
// initialized with the first complete set.
func TestControllerWrite(t *testing.T) {
	f := newFixture(t)
	wtxn := f.db.WriteTxn(f.ceps)
	done := f.ceps.RegisterInitializer(wtxn, "test")
	wtxn.Commit()
	c := &controller{db: f.db, ceps: f.ceps, src: f.src(), initDone: done}

	f.put(k8sPod("web-0", "uid-1"), readyEndpoint(12, "web-0"))
	c.write(f.desired(), false)
	if ok, _ := f.ceps.Initialized(f.db.ReadTxn()); ok {
		t.Fatal("initialized before the sources were complete")
	}
	row, rev, _ := f.ceps.Get(f.db.ReadTxn(), tables.CiliumEndpointKeyIndex.Query("prod/web-0"))
	if row == nil || row.Status.Kind != reconciler.StatusKindPending {
		t.Fatalf("row %+v, want a Pending row", row)
	}

	// The reconciler marks it Done; the same desired state again writes
	// nothing.
	wtxn = f.db.WriteTxn(f.ceps)
	f.ceps.Insert(wtxn, row.Clone().SetStatus(reconciler.StatusDone()))
	wtxn.Commit()
	_, rev, _ = f.ceps.Get(f.db.ReadTxn(), tables.CiliumEndpointKeyIndex.Query("prod/web-0"))
	ep := readyEndpoint(12, "web-0")
	ep.State = tables.StateRegenerating
	f.put(ep)
	c.write(f.desired(), true)
	row, rev2, _ := f.ceps.Get(f.db.ReadTxn(), tables.CiliumEndpointKeyIndex.Query("prod/web-0"))
	if rev2 != rev || row.Status.Kind != reconciler.StatusKindDone {
		t.Errorf("an unchanged CEP was rewritten (revision %d -> %d, status %s)", rev, rev2, row.Status.Kind)
	}
	if ok, _ := f.ceps.Initialized(f.db.ReadTxn()); !ok {
		t.Error("not initialized after a complete set")
	}

	// CNI DEL: the row goes.
	wtxn = f.db.WriteTxn(f.endpoints)
	f.endpoints.DeleteAll(wtxn)
	wtxn.Commit()
	c.write(f.desired(), false)
	if n := f.ceps.NumObjects(f.db.ReadTxn()); n != 0 {
		t.Errorf("%d rows after the endpoint was deleted, want 0", n)
	}
}
