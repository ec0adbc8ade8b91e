package main

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/api/models"
)

func (a *app) podLabelCommand() *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "label [-n NAMESPACE] NAME KEY=VALUE... [KEY-...]",
		Short: "Set or remove a pod's labels, registering the pod if the agent does not know it",
		Long: `label sets (KEY=VALUE) and removes (KEY-) labels of one pod in one request:
it reads the pod's metadata from the agent (a pod it does not know starts with
no labels), applies the changes and stores the result (PUT /v1/pod/NAMESPACE/NAME),
keeping the pod's uid and annotations. Endpoints of the pod move to the identity
of the new labels.

This is how containers started without Kubernetes get labels: podman passes
only the container's name (or, for a container in a podman pod, the pod's
name) to the CNI plugin, so a container named web takes the labels of pod
default/web. Label it before it starts; its network setup waits for the labels
at most the agent's --pod-metadata-timeout (10s by default), then fails.

NAME may be NAMESPACE/NAME instead of -n. A pod registered from a manifest in
--pod-manifest-dir keeps the labels set here until that manifest changes.`,
		Example: `  membrane pod label web app=web tier=front
  podman run -d --network membrane --name web IMAGE

  membrane pod label web tier-            # remove a label
  membrane pod label -n shop cart app=cart
  membrane pod label shop/cart app=cart`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := podRef(args[0], namespace, cmd.Flags().Changed("namespace"))
			if err != nil {
				return err
			}
			set, remove, err := parseLabelChanges(args[1:])
			if err != nil {
				return err
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			pod := &models.Pod{Namespace: ns, Name: name}
			cur, err := c.GetPod(ctx, ns, name)
			switch {
			case err == nil:
				pod.UID, pod.Labels, pod.Annotations = cur.UID, cur.Labels, cur.Annotations
			case client.IsStatus(err, http.StatusNotFound):
				cur = &models.Pod{}
			default:
				return fmt.Errorf("label pod %s/%s: reading its metadata: %w", ns, name, err)
			}
			if pod.Labels == nil {
				pod.Labels = map[string]string{}
			}
			for _, k := range remove {
				delete(pod.Labels, k)
			}
			maps.Copy(pod.Labels, set)
			got, err := c.PutPod(ctx, pod)
			if err != nil {
				return fmt.Errorf("label pod %s/%s: %w", ns, name, err)
			}
			if got.Name == "" {
				got = pod // the agent answered without a body
			}
			if strings.HasPrefix(cur.Source, "manifest:") {
				fmt.Fprintf(a.stderr, "note: pod %s/%s was registered from %s; these labels hold until that manifest changes\n",
					ns, name, strings.TrimPrefix(cur.Source, "manifest:"))
			}
			if a.output != outputTable {
				return a.render(got, nil)
			}
			fmt.Fprintf(a.stdout, "pod %s/%s labelled: %s\n", ns, name, dash(labelList(got.Labels)))
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "Namespace of the pod")
	return cmd
}

// podRef reads NAME or NAMESPACE/NAME; -n applies to a bare NAME, and
// contradicting it is an error.
func podRef(arg, namespace string, nsGiven bool) (ns, name string, err error) {
	ns, name = namespace, arg
	if n, rest, ok := strings.Cut(arg, "/"); ok {
		if n == "" || rest == "" || strings.Contains(rest, "/") {
			return "", "", fmt.Errorf("invalid pod %q: want NAME or NAMESPACE/NAME, e.g. web or default/web", arg)
		}
		if nsGiven && n != namespace {
			return "", "", fmt.Errorf("pod %q is in namespace %q but -n says %q", arg, n, namespace)
		}
		ns, name = n, rest
	}
	if name == "" {
		return "", "", fmt.Errorf("invalid pod %q: want NAME or NAMESPACE/NAME", arg)
	}
	return ns, name, nil
}

// parseLabelChanges reads KEY=VALUE (set) and KEY- (remove) arguments, as
// kubectl label does. A key may appear once.
func parseLabelChanges(args []string) (set map[string]string, remove []string, err error) {
	set = map[string]string{}
	seen := map[string]bool{}
	for _, arg := range args {
		var key string
		if k, v, ok := strings.Cut(arg, "="); ok {
			key = k
			set[k] = v
		} else if k, ok := strings.CutSuffix(arg, "-"); ok {
			key = k
			remove = append(remove, k)
		} else {
			return nil, nil, fmt.Errorf("invalid label change %q: want KEY=VALUE to set a label or KEY- to remove it", arg)
		}
		if key == "" {
			return nil, nil, fmt.Errorf("invalid label change %q: the key is empty", arg)
		}
		if seen[key] {
			return nil, nil, fmt.Errorf("label %q is changed twice", key)
		}
		seen[key] = true
	}
	return set, remove, nil
}

// labelList prints labels as sorted "k=v, k=v".
func labelList(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}
