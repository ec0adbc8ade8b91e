package v2

import (
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/membrane-net/membrane/labels"
)

// CiliumIdentity is one security identity, cluster-wide. As in Cilium:
//
//   - the name is the numeric identity ("256");
//   - security-labels, at the top level of the object (there is no spec),
//     is the source of truth: every label of the identity, keyed
//     "source:key" ("k8s:app": "web");
//   - the object's metadata labels are its k8s-source labels without the
//     source ("app": "web"), so `kubectl get ciliumid -l app=web` finds
//     identities, and the Namespace column shows the
//     io.kubernetes.pod.namespace label.
//
// NewCiliumIdentity builds one that way.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	// SecurityLabels are the identity's labels, "source:key" -> value.
	SecurityLabels map[string]string `json:"security-labels"`
}

// NewCiliumIdentity returns the CiliumIdentity of identity id with labels
// ls: named by the number, ls as security labels, and its k8s-source
// labels as metadata labels (those that are valid Kubernetes labels; the
// others are only in the security labels).
func NewCiliumIdentity(id uint32, ls labels.Labels) *CiliumIdentity {
	ci := &CiliumIdentity{
		TypeMeta:       metav1.TypeMeta{APIVersion: SchemeGroupVersion.String(), Kind: KindCiliumIdentity},
		ObjectMeta:     metav1.ObjectMeta{Name: strconv.FormatUint(uint64(id), 10)},
		SecurityLabels: make(map[string]string, len(ls)),
	}
	for _, l := range ls {
		ci.SecurityLabels[l.Source+":"+l.Key] = l.Value
		if l.Source != labels.SourceK8s ||
			len(validation.IsQualifiedName(l.Key)) > 0 || len(validation.IsValidLabelValue(l.Value)) > 0 {
			continue
		}
		if ci.Labels == nil {
			ci.Labels = map[string]string{}
		}
		ci.Labels[l.Key] = l.Value
	}
	return ci
}

// CiliumIdentityList is a list of CiliumIdentities.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type CiliumIdentityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`

	Items []CiliumIdentity `json:"items"`
}
