package identity

import (
	"context"

	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"
)

// backend is where the controller's identities live: the node's own
// Allocator (identities.json; the default) or, in Kubernetes mode, the
// cluster's CiliumIdentity objects (ClusterAllocator). Rows it returns are
// fresh copies, ready for the identities table.
type backend interface {
	// Allocate returns the identity of ls, allocating one if they have
	// none; isNew tells which.
	Allocate(ctx context.Context, ls labels.Labels) (ident *tables.Identity, isNew bool, err error)
	// Restore is Allocate preferring number id for labels without one.
	Restore(ctx context.Context, ls labels.Labels, id tables.NumericIdentity) (ident *tables.Identity, isNew bool, err error)
	// Release gives up identities no local endpoint uses; it returns those
	// it released.
	Release(ids ...tables.NumericIdentity) ([]tables.NumericIdentity, error)
	// Get and Identities read what the backend knows, reserved included.
	Get(id tables.NumericIdentity) (*tables.Identity, bool)
	Identities() []*tables.Identity
}

// localBackend is the Allocator as a backend: node-local numbers, kept in
// the state directory. It needs no context: it never waits on the network.
type localBackend struct{ a *Allocator }

func (l localBackend) Allocate(_ context.Context, ls labels.Labels) (*tables.Identity, bool, error) {
	return local(l.a.Allocate(ls))
}

func (l localBackend) Restore(_ context.Context, ls labels.Labels, id tables.NumericIdentity) (*tables.Identity, bool, error) {
	return local(l.a.Restore(ls, id))
}

func (l localBackend) Release(ids ...tables.NumericIdentity) ([]tables.NumericIdentity, error) {
	return l.a.Release(ids...)
}

func (l localBackend) Get(id tables.NumericIdentity) (*tables.Identity, bool) {
	ident, ok := l.a.Get(id)
	markLocal(ident)
	return ident, ok
}

func (l localBackend) Identities() []*tables.Identity {
	out := l.a.Identities()
	for _, ident := range out {
		markLocal(ident)
	}
	return out
}

func local(ident *tables.Identity, isNew bool, err error) (*tables.Identity, bool, error) {
	markLocal(ident)
	return ident, isNew, err
}

// markLocal sets the source of a cluster identity of the local allocator
// (the Allocator returns copies).
func markLocal(ident *tables.Identity) {
	if ident != nil && !ident.Reserved {
		ident.Source = SourceLocal
	}
}
