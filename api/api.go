// Package api is the contract between membrane-agent and its clients:
// openapi.yaml describes every route of the REST API served on the agent's
// unix socket, models holds the JSON documents, client the Go client the
// CNI plugin and the CLI share. openapi_test.go keeps the document equal to
// the routes the default agent serves and to the models' JSON keys, so the
// document cannot drift from the code.
//
// Read it with any OpenAPI 3 viewer, or see docs/api.md for the API by
// example (curl --unix-socket).
package api

import _ "embed"

// OpenAPI is openapi.yaml, for tools (and tests) that want the document
// without finding the file.
//
//go:embed openapi.yaml
var OpenAPI []byte
