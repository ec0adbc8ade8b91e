package remoteendpoints

import (
	"net/netip"
	"strings"
	"time"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
)

// record is what the informer keeps of a remote CiliumEndpoint: its key,
// version and creation time, its identity number, its node and its
// addresses, parsed. It stands in the informer's store instead of the
// object (slim makes it), because at a cluster's scale this cache is
// most of what a remote endpoint costs the agent: a CiliumEndpoint with
// nothing but these fields set still carries an ObjectMeta and a status
// of a few hundred bytes; a record is about a hundred. Node names
// repeat across endpoints and are interned.
//
// The informer needs metadata (the store's key, the resource version):
// record implements metav1.Object with what it has, and its setters do
// nothing. Nothing else reads it.
type record struct {
	// key is namespace/name, the store's key; the claims of addresses
	// share its bytes.
	key             string
	resourceVersion string
	created         int64 // Unix seconds (a CEP's creationTimestamp has no more)
	// identity is the CEP's status.identity.id, 0 if it has none or one
	// out of range.
	identity uint32
	// badAddress: an address does not parse; the CEP claims nothing.
	badAddress bool
	node       unique.Handle[string]
	addrs      []netip.Addr
}

// newRecord reads a CEP into a record.
func newRecord(cep *v2.CiliumEndpoint) *record {
	r := &record{
		key:             cep.Namespace + "/" + cep.Name,
		resourceVersion: cep.ResourceVersion,
		created:         cep.CreationTimestamp.Unix(),
	}
	if id := cep.Status.Identity; id != nil && id.ID > 0 && id.ID <= 0xffffffff {
		r.identity = uint32(id.ID)
	}
	n := cep.Status.Networking
	if n == nil {
		return r
	}
	r.node = unique.Make(n.NodeIP)
	var buf [2]netip.Addr
	addrs := buf[:0]
	for _, pair := range n.Addressing {
		for _, s := range []string{pair.IPv4, pair.IPv6} {
			if s == "" {
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				r.badAddress = true
				continue
			}
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) > 0 { // exactly as long as needed
		r.addrs = make([]netip.Addr, len(addrs))
		copy(r.addrs, addrs)
	}
	return r
}

// nodeName is the CEP's status.networking.node.
func (r *record) nodeName() string {
	if r.node == (unique.Handle[string]{}) {
		return ""
	}
	return r.node.Value()
}

// prefixes are the host prefixes of the addresses that parse.
func (r *record) prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(r.addrs))
	for _, a := range r.addrs {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// runtime.Object, for the informer.

func (r *record) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (r *record) DeepCopyObject() runtime.Object {
	c := *r
	c.addrs = append([]netip.Addr(nil), r.addrs...)
	return &c
}

// metav1.Object: what the informer reads is the namespace, name and
// resource version.

func (r *record) GetNamespace() string {
	ns, _, _ := strings.Cut(r.key, "/")
	return ns
}
func (r *record) GetName() string {
	_, name, _ := strings.Cut(r.key, "/")
	return name
}
func (r *record) GetResourceVersion() string { return r.resourceVersion }
func (r *record) GetCreationTimestamp() metav1.Time {
	return metav1.NewTime(time.Unix(r.created, 0))
}
func (r *record) SetNamespace(string)                           {}
func (r *record) SetName(string)                                {}
func (r *record) GetGenerateName() string                       { return "" }
func (r *record) SetGenerateName(string)                        {}
func (r *record) GetUID() types.UID                             { return "" }
func (r *record) SetUID(types.UID)                              {}
func (r *record) SetResourceVersion(string)                     {}
func (r *record) GetGeneration() int64                          { return 0 }
func (r *record) SetGeneration(int64)                           {}
func (r *record) GetSelfLink() string                           { return "" }
func (r *record) SetSelfLink(string)                            {}
func (r *record) SetCreationTimestamp(metav1.Time)              {}
func (r *record) GetDeletionTimestamp() *metav1.Time            { return nil }
func (r *record) SetDeletionTimestamp(*metav1.Time)             {}
func (r *record) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (r *record) SetDeletionGracePeriodSeconds(*int64)          {}
func (r *record) GetLabels() map[string]string                  { return nil }
func (r *record) SetLabels(map[string]string)                   {}
func (r *record) GetAnnotations() map[string]string             { return nil }
func (r *record) SetAnnotations(map[string]string)              {}
func (r *record) GetFinalizers() []string                       { return nil }
func (r *record) SetFinalizers([]string)                        {}
func (r *record) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (r *record) SetOwnerReferences([]metav1.OwnerReference)    {}
func (r *record) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (r *record) SetManagedFields([]metav1.ManagedFieldsEntry)  {}

var (
	_ metav1.Object  = (*record)(nil)
	_ runtime.Object = (*record)(nil)
)
