package podmeta

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sync"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/statedb/tables"

	"github.com/membrane-net/membrane/internal/clip"
)

// podsFile keeps the pods registered through the API across restarts
// (manifest pods are re-read from their directory).
const podsFile = "pods.json"

// SourceAPI marks rows written through the API.
const SourceAPI = "api"

// Source writes the pods table.
type Source struct {
	log  *slog.Logger
	db   *statedb.DB
	pods statedb.RWTable[*tables.Pod]
	dir  statedir.Dir
	mu   sync.Mutex // serialises writes of pods.json, guards encoded
	// encoded is each saved pod's entry of pods.json and the row it was
	// encoded from (rows are immutable: a new pointer is a change), so a
	// save encodes only the pods that changed: encoding every pod on each
	// PUT made registering a pod cost O(pods) (see
	// docs/benchmarks-controlplane.md).
	encoded map[string]encodedPod
}

type encodedPod struct {
	row  *tables.Pod
	json []byte
}

// Validate checks a pod's names and labels.
func Validate(p *models.Pod) error {
	if !tables.ValidK8sName(p.Namespace) {
		return fmt.Errorf("namespace %s is not a valid Kubernetes namespace", clip.Quote(p.Namespace))
	}
	if !tables.ValidK8sName(p.Name) {
		return fmt.Errorf("name %s is not a valid pod name", clip.Quote(p.Name))
	}
	// As the endpoints of the pod will carry them (source k8s); the first
	// invalid one in key order is reported.
	return labels.FromMap(p.Labels, labels.SourceK8s).Validate()
}

// Upsert stores a pod's metadata. It validates the pod first (Validate); a
// pod it refuses is a 400.
func (s *Source) Upsert(p *models.Pod, source string) (*tables.Pod, error) {
	if err := Validate(p); err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, err)
	}
	row := &tables.Pod{
		Namespace: p.Namespace, Name: p.Name, UID: p.UID,
		Labels: maps.Clone(p.Labels), Annotations: maps.Clone(p.Annotations), Source: source,
	}
	wtxn := s.db.WriteTxn(s.pods)
	if _, _, err := s.pods.Insert(wtxn, row); err != nil {
		wtxn.Abort()
		return nil, err
	}
	wtxn.Commit()
	return row, s.save()
}

// Delete removes a pod's metadata; found is false if it was not there.
func (s *Source) Delete(key string) (found bool, err error) {
	wtxn := s.db.WriteTxn(s.pods)
	p, _, ok := s.pods.Get(wtxn, tables.PodKeyIndex.Query(key))
	if !ok {
		wtxn.Abort()
		return false, nil
	}
	s.pods.Delete(wtxn, p)
	wtxn.Commit()
	return true, s.save()
}

func (s *Source) save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.encoded == nil {
		s.encoded = map[string]encodedPod{}
	}
	seen := make(map[string]struct{}, len(s.encoded))
	var entries [][]byte
	for p := range s.pods.All(s.db.ReadTxn()) {
		if p.Source != SourceAPI {
			continue
		}
		key := p.Key()
		e, ok := s.encoded[key]
		if !ok || e.row != p {
			b, err := json.Marshal(p)
			if err != nil {
				return err
			}
			e = encodedPod{row: p, json: b}
			s.encoded[key] = e
		}
		seen[key] = struct{}{}
		entries = append(entries, e.json)
	}
	for key := range s.encoded {
		if _, ok := seen[key]; !ok {
			delete(s.encoded, key)
		}
	}
	return s.dir.WriteFile(podsFile, statedir.JSONArray(entries))
}

func (s *Source) restore() error {
	var pods []*tables.Pod
	if found, err := s.dir.ReadJSON(podsFile, &pods); err != nil || !found {
		return err
	}
	for i, p := range pods {
		var err error
		if p == nil {
			err = errors.New("null")
		} else {
			err = Validate(&models.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels})
		}
		if err != nil {
			return fmt.Errorf("state file %s: entry %d: %w (move the file away to start without the pods registered through the API)", s.dir.Path(podsFile), i, err)
		}
	}
	wtxn := s.db.WriteTxn(s.pods)
	for _, p := range pods {
		s.pods.Insert(wtxn, p)
	}
	wtxn.Commit()
	s.log.Info("pods restored", "count", len(pods))
	return nil
}

// Routes of /v1/pod.
func (s *Source) routes() apiserver.RoutesOut {
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "GET /v1/pod", Handler: apiserver.Handle(s.list)},
		{Pattern: "GET /v1/pod/{namespace}/{name}", Handler: apiserver.Handle(s.get)},
		{Pattern: "PUT /v1/pod/{namespace}/{name}", Handler: apiserver.Handle(s.put)},
		{Pattern: "DELETE /v1/pod/{namespace}/{name}", Handler: apiserver.Handle(s.del)},
	}}
}

func toModel(p *tables.Pod) models.Pod {
	return models.Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Labels: p.Labels, Annotations: p.Annotations, Source: p.Source}
}

func (s *Source) list(w http.ResponseWriter, r *http.Request) (any, int, error) {
	out := []models.Pod{}
	for p := range s.pods.All(s.db.ReadTxn()) {
		out = append(out, toModel(p))
	}
	return out, http.StatusOK, nil
}

func (s *Source) get(w http.ResponseWriter, r *http.Request) (any, int, error) {
	key := r.PathValue("namespace") + "/" + r.PathValue("name")
	p, _, ok := s.pods.Get(s.db.ReadTxn(), tables.PodKeyIndex.Query(key))
	if !ok {
		return nil, 0, apiserver.Errorf(http.StatusNotFound, "pod %s not found", key)
	}
	return toModel(p), http.StatusOK, nil
}

func (s *Source) put(w http.ResponseWriter, r *http.Request) (any, int, error) {
	var p models.Pod
	if err := apiserver.DecodeJSON(w, r, &p); err != nil {
		return nil, 0, err
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if (p.Namespace != "" && p.Namespace != ns) || (p.Name != "" && p.Name != name) {
		return nil, 0, apiserver.Errorf(http.StatusBadRequest, "body names pod %s/%s but the path %s/%s", p.Namespace, p.Name, ns, name)
	}
	if p.Source != "" && p.Source != SourceAPI {
		return nil, 0, apiserver.Errorf(http.StatusBadRequest, "source %q is set by the agent", p.Source)
	}
	p.Namespace, p.Name = ns, name
	row, err := s.Upsert(&p, SourceAPI)
	if err != nil {
		return nil, 0, err
	}
	return toModel(row), http.StatusOK, nil
}

func (s *Source) del(w http.ResponseWriter, r *http.Request) (any, int, error) {
	key := r.PathValue("namespace") + "/" + r.PathValue("name")
	found, err := s.Delete(key)
	if err != nil {
		return nil, 0, err
	}
	if !found {
		return nil, 0, apiserver.Errorf(http.StatusNotFound, "pod %s not found", key)
	}
	return nil, http.StatusNoContent, nil
}
