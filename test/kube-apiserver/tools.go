//go:build tools

// Package tools pins the Kubernetes commands the Kubernetes-mode tests run:
// kube-apiserver (against Debian's etcd) and kubectl (for machines that have
// none). Built by scripts/kube-apiserver.sh into a cache outside the
// repository; see README.md.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
