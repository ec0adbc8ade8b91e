package client

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
	k8sclient "github.com/membrane-net/membrane/k8s/client"
)

// NewRecorder records Kubernetes events (on core and cilium.io/v2
// objects) as membrane-agent of this node, until ctx ends or stop is
// called: how the group's watchers tell an operator, on the object, why
// they refuse it.
func NewRecorder(ctx context.Context, cs *k8sclient.Clientset) (rec record.EventRecorder, stop func(), err error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	if err := v2.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return broadcaster.NewRecorder(scheme, corev1.EventSource{Component: "membrane-agent", Host: cs.NodeName}), broadcaster.Shutdown, nil
}
