package main

import (
	"fmt"
	"github.com/membrane-net/membrane/api/podmanifest"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/membrane-net/membrane/api/models"
)

func (a *app) podCommand() *cobra.Command {
	return groupCommand("pod", "Register, list and delete the pod metadata endpoints take their labels from",
		`The agent gives an endpoint created for a pod (the CNI plugin passes the pod's
namespace and name) the labels of that pod, as k8s: labels plus the namespace
label. Without a Kubernetes watcher, pods are registered here: from ordinary
Kubernetes Pod manifests, of which only the metadata (name, namespace, uid,
labels, annotations) is used, or label by label (for podman, whose containers
take the labels of pod default/CONTAINER-NAME). Changing a pod's labels moves
its endpoints to the matching identity.`,
		`  membrane pod apply -f web.yaml
  membrane pod label web app=web
  membrane pod list
  membrane pod delete default/web`,
		a.podApplyCommand(),
		a.podLabelCommand(),
		a.podListCommand(),
		a.podDeleteCommand(),
	)
}

func (a *app) podApplyCommand() *cobra.Command {
	var (
		files     []string
		namespace string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Register pods from Kubernetes Pod manifests (YAML or JSON)",
		Long: `apply reads Kubernetes Pod manifests and registers each pod with the agent
(PUT /v1/pod/NAMESPACE/NAME with its labels, annotations and uid), replacing
what the agent held for it.

A file may hold several manifests separated by "---", several JSON objects,
or a "kind: List" whose items are Pods. -f repeats; "-" reads stdin; a
directory means its *.yaml, *.yml and *.json files. Pods without a namespace
go to --namespace. Every manifest is checked before any pod is sent; an error
names the file, document and item at fault. Applying stops at the first pod
the agent refuses.`,
		Example: `  membrane pod apply -f web.yaml
  kubectl get pod web -o yaml | membrane pod apply -f -
  membrane pod apply -f manifests/ -n staging

  # web.yaml
  apiVersion: v1
  kind: Pod
  metadata:
    name: web
    labels:
      app: web
  ---
  apiVersion: v1
  kind: Pod
  metadata:
    name: db
    namespace: storage
    labels:
      app: db`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("no manifests: give at least one -f FILE (- for stdin)")
			}
			pods, err := a.readManifests(files, namespace)
			if err != nil {
				return err
			}
			if len(pods) == 0 {
				return fmt.Errorf("no Pod manifests in %s", strings.Join(files, ", "))
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			applied := []models.Pod{}
			for _, p := range pods {
				got, err := c.PutPod(ctx, &p.Pod)
				if err != nil {
					return fmt.Errorf("apply pod %s/%s (%s): %w", p.Namespace, p.Name, p.Origin, err)
				}
				if got.Name == "" {
					got = &p.Pod // the agent answered without a body
				}
				applied = append(applied, *got)
				if a.output == outputTable {
					fmt.Fprintf(a.stdout, "pod %s/%s applied\n", p.Namespace, p.Name)
				}
			}
			if a.output != outputTable {
				return a.render(applied, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "Manifest file, directory, or - for stdin (repeatable)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "Namespace of pods whose manifest names none")
	return cmd
}

// readManifests parses every file before anything is applied.
func (a *app) readManifests(files []string, namespace string) ([]podmanifest.Pod, error) {
	var pods []podmanifest.Pod
	for _, f := range files {
		inputs, err := a.expandManifestPath(f)
		if err != nil {
			return nil, err
		}
		for _, in := range inputs {
			ps, err := podmanifest.Parse(in.name, in.data, namespace)
			if err != nil {
				return nil, err
			}
			pods = append(pods, ps...)
		}
	}
	if err := podmanifest.CheckUnique(pods); err != nil {
		return nil, err
	}
	return pods, nil
}

type manifestInput struct {
	name string
	data []byte
}

func (a *app) expandManifestPath(f string) ([]manifestInput, error) {
	if f == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return nil, fmt.Errorf("reading manifests from stdin: %w", err)
		}
		return []manifestInput{{"<stdin>", data}}, nil
	}
	st, err := os.Stat(f)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	names := []string{f}
	if st.IsDir() {
		ents, err := os.ReadDir(f)
		if err != nil {
			return nil, fmt.Errorf("manifest directory: %w", err)
		}
		names = nil
		for _, e := range ents {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					names = append(names, filepath.Join(f, e.Name()))
				}
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("manifest directory %s holds no *.yaml, *.yml or *.json files", f)
		}
	}
	var out []manifestInput
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		out = append(out, manifestInput{n, data})
	}
	return out, nil
}

func (a *app) podListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the pods the agent holds metadata for",
		Long: `list prints every pod the agent knows, sorted by namespace and name: its uid,
labels (one per line) and the source that registered it (the API, a manifest
directory, ...).`,
		Example: `  membrane pod list
  membrane pod list -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			pods, err := c.ListPods(ctx)
			if err != nil {
				return fmt.Errorf("list pods: %w", err)
			}
			if pods == nil {
				pods = []models.Pod{}
			}
			slices.SortStableFunc(pods, func(x, y models.Pod) int {
				return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
			})
			return a.render(pods, func(w io.Writer) error {
				t := newTable(w, "NAMESPACE", "NAME", "UID", "LABELS", "SOURCE")
				for _, p := range pods {
					t.row(p.Namespace, p.Name, dash(p.UID), dash(mapLines(p.Labels)), dash(p.Source))
				}
				return t.flush()
			})
		},
	}
}

// mapLines prints a label map as sorted key=value lines.
func mapLines(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

func (a *app) podDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAMESPACE/NAME...",
		Aliases: []string{"rm"},
		Short:   "Forget pods' metadata",
		Long: `delete removes pods from the agent's pod metadata. It does not delete the
pods' endpoints (the CNI plugin's DEL does that). It stops at the first pod
it cannot delete.`,
		Example: `  membrane pod delete default/web
  membrane pod delete default/web storage/db`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type ref struct{ ns, name string }
			var refs []ref
			for _, arg := range args {
				ns, name, ok := strings.Cut(arg, "/")
				if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
					return fmt.Errorf("invalid pod %q: want NAMESPACE/NAME, e.g. default/web", arg)
				}
				refs = append(refs, ref{ns, name})
			}
			c, ctx, cancel := a.client(cmd)
			defer cancel()
			for _, r := range refs {
				if err := c.DeletePod(ctx, r.ns, r.name); err != nil {
					return fmt.Errorf("delete pod %s/%s: %w", r.ns, r.name, err)
				}
				if a.output == outputTable {
					fmt.Fprintf(a.stdout, "pod %s/%s deleted\n", r.ns, r.name)
				}
			}
			if a.output != outputTable {
				return a.render(map[string][]string{"deleted": args}, nil)
			}
			return nil
		},
	}
}
