package policyrepo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/metrics"
	"github.com/membrane-net/membrane/policy/api"
	"github.com/membrane-net/membrane/statedb/tables"
)

// routes serves /v1/policy; its documents are api/models' Policy* types.
func (r *Repository) routes() apiserver.RoutesOut {
	return apiserver.RoutesOut{Routes: []apiserver.Route{
		{Pattern: "PUT /v1/policy", Handler: apiserver.Handle(r.put)},
		{Pattern: "GET /v1/policy", Handler: apiserver.Handle(r.get)},
		{Pattern: "DELETE /v1/policy", Handler: apiserver.Handle(r.del)},
	}}
}

// readBody reads the raw body, at most apiserver.MaxBodyBytes (413 past it).
func readBody(w http.ResponseWriter, req *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, req.Body, apiserver.MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, apiserver.Errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
	case err != nil:
		return nil, apiserver.Errorf(http.StatusBadRequest, "reading the request body: %w", err)
	}
	return data, nil
}

func (r *Repository) put(w http.ResponseWriter, req *http.Request) (any, int, error) {
	data, err := readBody(w, req)
	if err != nil {
		return nil, 0, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, 0, apiserver.Errorf(http.StatusBadRequest, "empty request body: a policy document (JSON or YAML) is required")
	}
	rules, err := api.Parse(data)
	if err != nil {
		metrics.PolicyImportErrors.WithLabelValues(tables.PolicySourceAPI).Inc()
		return nil, 0, apiserver.WithStatus(http.StatusBadRequest, err)
	}
	rev, _, err := r.Import(rules)
	if err != nil {
		metrics.PolicyImportErrors.WithLabelValues(tables.PolicySourceAPI).Inc()
		return nil, 0, err
	}
	return models.PolicyImportResponse{Revision: rev, Rules: len(rules)}, http.StatusOK, nil
}

func (r *Repository) get(w http.ResponseWriter, req *http.Request) (any, int, error) {
	txn := r.db.ReadTxn()
	resp := models.PolicyRulesResponse{Revision: r.RevisionAt(txn), Rules: []*models.PolicyRule{}}
	for _, row := range r.List(txn) {
		m, err := ruleModel(row)
		if err != nil {
			return nil, 0, err
		}
		resp.Rules = append(resp.Rules, m)
	}
	return resp, http.StatusOK, nil
}

// ruleModel is a row of the policy-rules table as GET /v1/policy shows it.
func ruleModel(row *tables.PolicyRule) (*models.PolicyRule, error) {
	rule, err := json.Marshal(row.Rule)
	if err != nil {
		return nil, fmt.Errorf("encode rule %s: %w", row.Key, err)
	}
	return &models.PolicyRule{Key: row.Key, Rule: rule, Revision: row.Revision, Namespace: row.Namespace, Clusterwide: row.Clusterwide, Source: row.Source, Labels: row.Labels}, nil
}

func (r *Repository) del(w http.ResponseWriter, req *http.Request) (any, int, error) {
	data, err := readBody(w, req)
	if err != nil {
		return nil, 0, err
	}
	var body models.PolicyDeleteRequest
	if len(bytes.TrimSpace(data)) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(data))
		if err := apiserver.DecodeJSON(w, req, &body); err != nil {
			return nil, 0, err
		}
	}
	match := make([]api.RuleLabel, 0, len(body.Labels))
	for i, s := range body.Labels {
		l, err := api.ParseRuleLabel(s)
		if err != nil {
			return nil, 0, apiserver.Errorf(http.StatusBadRequest, "labels[%d]: %w", i, err)
		}
		match = append(match, l)
	}
	rev, n, err := r.Delete(match)
	switch {
	case errors.Is(err, ErrNoMatch) && len(match) == 0:
		return nil, 0, apiserver.Errorf(http.StatusNotFound, "no policy rules to delete")
	case errors.Is(err, ErrNoMatch):
		return nil, 0, apiserver.Errorf(http.StatusNotFound, "no policy rule carries all of the labels %s", strings.Join(body.Labels, ", "))
	case err != nil:
		return nil, 0, fmt.Errorf("delete policy: %w", err)
	}
	return models.PolicyDeleteResponse{Revision: rev, Deleted: n}, http.StatusOK, nil
}
