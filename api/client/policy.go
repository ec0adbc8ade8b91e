package client

import (
	"context"
	"net/http"

	"github.com/membrane-net/membrane/api/models"
)

// ImportPolicy sends a policy document as is (PUT /v1/policy): Cilium's
// rule format, JSON or YAML, which the agent parses itself. contentType
// ("application/json" or "application/yaml") says which it is.
func (c *Client) ImportPolicy(ctx context.Context, contentType string, doc []byte) (*models.PolicyImportResponse, error) {
	var r models.PolicyImportResponse
	if err := c.DoRaw(ctx, http.MethodPut, "/v1/policy", contentType, doc, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetPolicy returns the policy revision and every imported rule.
func (c *Client) GetPolicy(ctx context.Context) (*models.PolicyRulesResponse, error) {
	var r models.PolicyRulesResponse
	if err := c.Get(ctx, "/v1/policy", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DeletePolicy deletes the rules carrying all of req.Labels, every rule
// if there are none; deleting nothing is a 404.
func (c *Client) DeletePolicy(ctx context.Context, req *models.PolicyDeleteRequest) (*models.PolicyDeleteResponse, error) {
	var r models.PolicyDeleteResponse
	if err := c.Do(ctx, http.MethodDelete, "/v1/policy", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// TracePolicy asks the policy engine for the verdict it gives a flow
// between two label sets (POST /v1/policy/trace).
func (c *Client) TracePolicy(ctx context.Context, req *models.PolicyTraceRequest) (*models.PolicyTraceResponse, error) {
	var r models.PolicyTraceResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/policy/trace", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
