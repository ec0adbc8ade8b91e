package api_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"sigs.k8s.io/yaml"

	"github.com/membrane-net/membrane/api"
	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/statedir"
	"github.com/membrane-net/membrane/statedb/tables"
)

// The parts of an OpenAPI 3 document the tests look at.
type document struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]*schema `json:"schemas"`
	} `json:"components"`
}

type schema struct {
	Type                 string             `json:"type"`
	Format               string             `json:"format"`
	Ref                  string             `json:"$ref"`
	Required             []string           `json:"required"`
	Properties           map[string]*schema `json:"properties"`
	Items                *schema            `json:"items"`
	AdditionalProperties json.RawMessage    `json:"additionalProperties"`
	Enum                 []string           `json:"enum"`
	AllOf                []*schema          `json:"allOf"`
}

func loadDocument(t *testing.T) (*document, any) {
	t.Helper()
	var doc document
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi.yaml: want an OpenAPI 3 document, got version %q", doc.OpenAPI)
	}
	var raw any
	if err := yaml.Unmarshal(api.OpenAPI, &raw); err != nil {
		t.Fatal(err)
	}
	return &doc, raw
}

var httpMethods = map[string]bool{"get": true, "put": true, "post": true, "delete": true, "patch": true, "head": true, "options": true}

// specPatterns returns every "METHOD /path" the document describes, in the
// syntax of net/http patterns (which OpenAPI's {param} happens to share).
func specPatterns(doc *document) []string {
	var out []string
	for path, item := range doc.Paths {
		for key := range item {
			if httpMethods[key] {
				out = append(out, strings.ToUpper(key)+" "+path)
			}
		}
	}
	slices.Sort(out)
	return out
}

// servedPatterns builds the default agent's hive without starting it and
// returns the patterns its API server registered.
func servedPatterns(t *testing.T) []string {
	t.Helper()
	var srv *apiserver.Server
	h := cells.NewAgentHive(cells.DefaultCells, cell.Invoke(func(s *apiserver.Server) { srv = s }))
	// Constructing the cells creates the state directory: keep it out of /var/lib.
	hive.AddConfigOverride(h, func(c *statedir.Config) { c.StateDir = t.TempDir() })
	if err := h.Populate(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("populate the default hive: %v", err)
	}
	if srv == nil || len(srv.Patterns) == 0 {
		t.Fatal("the default hive serves no API routes")
	}
	return slices.Sorted(slices.Values(srv.Patterns))
}

// TestOpenAPIRoutes: the document describes exactly the routes the default
// agent serves, so neither a new route nor a stale entry goes unnoticed.
func TestOpenAPIRoutes(t *testing.T) {
	doc, _ := loadDocument(t)
	spec := specPatterns(doc)
	served := servedPatterns(t)
	for _, p := range served {
		if !slices.Contains(spec, p) {
			t.Errorf("route %q is served but not in api/openapi.yaml", p)
		}
	}
	for _, p := range spec {
		if !slices.Contains(served, p) {
			t.Errorf("api/openapi.yaml describes %q, which the default agent does not serve", p)
		}
	}
}

// TestOpenAPIOperations: every operation answers errors with the Error
// model, declares a path parameter for each {name} in its path, and every
// $ref in the document resolves.
func TestOpenAPIOperations(t *testing.T) {
	doc, raw := loadDocument(t)

	// Every $ref points at something that exists.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if resolve(raw, ref) == nil {
					t.Errorf("%s: $ref %q does not resolve", at, ref)
				}
			}
			for k, c := range v {
				walk(c, at+"/"+k)
			}
		case []any:
			for i, c := range v {
				walk(c, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(raw, "#")

	for path, item := range doc.Paths {
		var pathParams []json.RawMessage
		if p, ok := item["parameters"]; ok {
			json.Unmarshal(p, &pathParams)
		}
		for method, body := range item {
			if !httpMethods[method] {
				continue
			}
			name := strings.ToUpper(method) + " " + path
			var op struct {
				Responses  map[string]json.RawMessage `json:"responses"`
				Parameters []json.RawMessage          `json:"parameters"`
			}
			if err := json.Unmarshal(body, &op); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses", name)
			}
			success := false
			for code, resp := range op.Responses {
				if code[0] == '2' {
					success = true
					continue
				}
				if !strings.Contains(string(resp), "#/components/responses/") {
					t.Errorf("%s: answer %s must use one of components/responses (the Error model)", name, code)
				}
			}
			if !success {
				t.Errorf("%s: no 2xx answer", name)
			}
			declared := map[string]bool{}
			for _, p := range append(pathParams, op.Parameters...) {
				var param struct {
					Ref  string `json:"$ref"`
					Name string `json:"name"`
					In   string `json:"in"`
				}
				json.Unmarshal(p, &param)
				if param.Ref != "" {
					b, _ := json.Marshal(resolve(raw, param.Ref))
					json.Unmarshal(b, &param)
				}
				if param.In == "path" {
					declared[param.Name] = true
				}
			}
			for _, seg := range strings.Split(path, "/") {
				if strings.HasPrefix(seg, "{") && !declared[strings.Trim(seg, "{}")] {
					t.Errorf("%s: path parameter %s is not declared", name, seg)
				}
			}
		}
	}
}

// resolve follows a local "#/a/b" reference in the generic document.
func resolve(raw any, ref string) any {
	if !strings.HasPrefix(ref, "#/") {
		return nil
	}
	cur := raw
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[part]; !ok {
			return nil
		}
	}
	return cur
}

// role says how a schema is used: request bodies are decoded with unknown
// fields rejected (so the schema must say additionalProperties: false);
// in answers, a field without omitempty is always present (so it is
// required) and one with omitempty may be missing (so it is not).
type role int

const (
	request role = 1 << iota
	response
)

// modelSchemas maps each schema to the Go model it documents.
var modelSchemas = map[string]struct {
	typ  reflect.Type
	role role
}{
	"Error":                       {reflect.TypeFor[models.Error](), response},
	"AddressPair":                 {reflect.TypeFor[models.AddressPair](), request | response},
	"EndpointChangeRequest":       {reflect.TypeFor[models.EndpointChangeRequest](), request},
	"EndpointBatchDeleteRequest":  {reflect.TypeFor[models.EndpointBatchDeleteRequest](), request},
	"EndpointBatchDeleteResponse": {reflect.TypeFor[models.EndpointBatchDeleteResponse](), response},
	"Endpoint":                    {reflect.TypeFor[models.Endpoint](), response},
	"StatusEntry":                 {reflect.TypeFor[models.StatusEntry](), response},
	"LabelsPatch":                 {reflect.TypeFor[models.LabelsPatch](), request},
	"EndpointLabels":              {reflect.TypeFor[models.EndpointLabels](), response},
	"EndpointHealth":              {reflect.TypeFor[models.EndpointHealth](), response},
	"Identity":                    {reflect.TypeFor[models.Identity](), response},
	"IPAMRequest":                 {reflect.TypeFor[models.IPAMRequest](), request},
	"IPAMAddress":                 {reflect.TypeFor[models.IPAMAddress](), response},
	"IPAMResponse":                {reflect.TypeFor[models.IPAMResponse](), response},
	"IPAMAllocation":              {reflect.TypeFor[models.IPAMAllocation](), response},
	// Pod is a PUT body whose namespace and name may come from the path
	// only, and an answer: only the request rules apply.
	"Pod":              {reflect.TypeFor[models.Pod](), request},
	"Status":           {reflect.TypeFor[models.Status](), response},
	"Runtime":          {reflect.TypeFor[models.Runtime](), response},
	"KubernetesStatus": {reflect.TypeFor[models.KubernetesStatus](), response},
	"KubernetesCache":  {reflect.TypeFor[models.KubernetesCache](), response},

	// /v1/policy (PUT's body is a policy document, not a model).
	"PolicyImportResponse": {reflect.TypeFor[models.PolicyImportResponse](), response},
	"PolicyRulesResponse":  {reflect.TypeFor[models.PolicyRulesResponse](), response},
	"PolicyRule":           {reflect.TypeFor[models.PolicyRule](), response},
	"PolicyDeleteRequest":  {reflect.TypeFor[models.PolicyDeleteRequest](), request},
	"PolicyDeleteResponse": {reflect.TypeFor[models.PolicyDeleteResponse](), response},
	"PolicyTraceRequest":   {reflect.TypeFor[models.PolicyTraceRequest](), request},
	"PolicyTraceResponse":  {reflect.TypeFor[models.PolicyTraceResponse](), response},
	"PolicyTracePeer":      {reflect.TypeFor[models.PolicyTracePeer](), response},
	"PolicyTraceStage":     {reflect.TypeFor[models.PolicyTraceStage](), response},
	"PolicyTraceRule":      {reflect.TypeFor[models.PolicyTraceRule](), response},
	"PolicyEntry":          {reflect.TypeFor[models.PolicyEntry](), response},
	"PolicyKey":            {reflect.TypeFor[models.PolicyKey](), response},

	// /v1/monitor
	"MonitorStats":    {reflect.TypeFor[models.MonitorStats](), response},
	"MonitorEvent":    {reflect.TypeFor[models.MonitorEvent](), response},
	"MonitorEndpoint": {reflect.TypeFor[models.MonitorEndpoint](), response},
	"MonitorPeer":     {reflect.TypeFor[models.MonitorPeer](), response},
	"MonitorIdentity": {reflect.TypeFor[models.MonitorIdentity](), response},
}

// Types of api/models that are not documents, so have no schema.
var notDocuments = map[string]string{
	"MonitorFilter": "the query of GET /v1/monitor, a parameter of the route; checked in TestOpenAPIMonitorFilter",
}

// Schemas without a Go model of their own in api/models.
var unmodelled = map[string]string{
	"EndpointState": "a string enum, checked in TestOpenAPIEndpointStates",
}

// TestOpenAPIModels: every schema's properties are exactly the JSON keys of
// its Go model, with matching types, so a field added, renamed or retyped
// on one side only fails here. Every model type has a schema.
func TestOpenAPIModels(t *testing.T) {
	doc, _ := loadDocument(t)
	schemas := doc.Components.Schemas

	for name := range schemas {
		if _, ok := modelSchemas[name]; !ok && unmodelled[name] == "" {
			t.Errorf("schema %s: not mapped to a Go model in this test (add it to modelSchemas or unmodelled)", name)
		}
	}
	for _, typ := range modelTypeNames(t) {
		if _, ok := schemas[typ]; !ok && typ != "EndpointState" && notDocuments[typ] == "" {
			t.Errorf("api/models.%s has no schema in api/openapi.yaml", typ)
		}
	}

	for name, m := range modelSchemas {
		s := schemas[name]
		if s == nil {
			t.Errorf("schema %s is missing", name)
			continue
		}
		fields := jsonFields(m.typ)
		for key := range s.Properties {
			if _, ok := fields[key]; !ok {
				t.Errorf("schema %s: property %q is not a JSON key of models.%s", name, key, m.typ.Name())
			}
		}
		for key, f := range fields {
			p, ok := s.Properties[key]
			if !ok {
				t.Errorf("schema %s: models.%s.%s (json %q) is not documented", name, m.typ.Name(), f.Name, key)
				continue
			}
			if want, got := openAPIType(f.Type), schemaType(schemas, p); want != got {
				t.Errorf("schema %s: property %q is %q, models.%s.%s is a %s (%q)", name, key, got, m.typ.Name(), f.Name, f.Type, want)
			}
			if m.role&response != 0 {
				omitted := strings.Contains(f.Tag.Get("json"), ",omit")
				if required := slices.Contains(s.Required, key); required == omitted {
					t.Errorf("schema %s: property %q: required=%v, but the model's JSON tag %q says it is %s",
						name, key, required, f.Tag.Get("json"), map[bool]string{true: "omitted when empty", false: "always present"}[omitted])
				}
			}
		}
		if m.role&request != 0 && m.role&response == 0 && string(s.AdditionalProperties) != "false" {
			t.Errorf("schema %s is a request body: the API rejects unknown fields, say additionalProperties: false", name)
		}
		for _, key := range s.Required {
			if _, ok := s.Properties[key]; !ok {
				t.Errorf("schema %s: required %q is not a property", name, key)
			}
		}
	}
}

// TestOpenAPIEndpointStates: the enum lists exactly the lifecycle states.
func TestOpenAPIEndpointStates(t *testing.T) {
	doc, _ := loadDocument(t)
	states := []models.EndpointState{
		models.StateWaitingForIdentity, models.StateWaitingToRegenerate, models.StateRegenerating,
		models.StateReady, models.StateDisconnecting, models.StateDisconnected,
		models.StateRestoring, models.StateInvalid, models.StateNotReady,
	}
	enum := doc.Components.Schemas["EndpointState"].Enum
	for _, s := range states {
		if !slices.Contains(enum, string(s)) {
			t.Errorf("EndpointState enum lacks %q", s)
		}
	}
	for _, s := range enum {
		if !tables.ValidState(tables.EndpointState(s)) {
			t.Errorf("EndpointState enum has %q, which is not a lifecycle state", s)
		}
	}
	// The schema owns the lifecycle; the wire names must be exactly its states.
	for _, s := range tables.States() {
		if !slices.Contains(states, models.EndpointState(s)) {
			t.Errorf("lifecycle state %q has no models.EndpointState constant", s)
		}
	}
	if len(enum) != len(states) {
		t.Errorf("EndpointState enum has %d values, the lifecycle %d", len(enum), len(states))
	}
}

// jsonFields returns a struct's fields by JSON key.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if key == "-" {
			continue
		}
		if key == "" {
			key = f.Name
		}
		out[key] = f
	}
	return out
}

var (
	timeType       = reflect.TypeFor[time.Time]()
	rawMessageType = reflect.TypeFor[json.RawMessage]()
)

// openAPIType is how encoding/json renders a Go type, in OpenAPI terms.
func openAPIType(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return "string/date-time"
	case t == rawMessageType: // a document of its own (a policy rule), passed through
		return "object"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() == reflect.Slice:
		return "array of " + openAPIType(t.Elem())
	case t.Kind() == reflect.Map:
		return "map of " + openAPIType(t.Elem())
	case t.Kind() == reflect.Struct:
		return "object " + t.Name()
	}
	return t.String()
}

// schemaType renders a property schema the way openAPIType renders a Go
// type; a $ref to a model schema stands for that model.
func schemaType(schemas map[string]*schema, s *schema) string {
	if len(s.AllOf) == 1 { // how OpenAPI 3.0 makes a $ref nullable
		return schemaType(schemas, s.AllOf[0])
	}
	if s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		target := schemas[name]
		if target == nil {
			return "unresolved " + s.Ref
		}
		if target.Type == "object" {
			return "object " + name
		}
		return schemaType(schemas, target)
	}
	switch s.Type {
	case "array":
		if s.Items == nil {
			return "array of ?"
		}
		return "array of " + schemaType(schemas, s.Items)
	case "object":
		var elem schema
		if len(s.AdditionalProperties) == 0 || json.Unmarshal(s.AdditionalProperties, &elem) != nil {
			return "object"
		}
		return "map of " + schemaType(schemas, &elem)
	case "string":
		if s.Format == "date-time" {
			return "string/date-time"
		}
	}
	return s.Type
}

// modelTypeNames lists the struct and named types declared in api/models.
func modelTypeNames(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("models/*.go")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.TYPE {
				for _, s := range g.Specs {
					names[s.(*ast.TypeSpec).Name.Name] = true
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("no types found in models/*.go")
	}
	return slices.Sorted(maps.Keys(names))
}

// TestOpenAPIMonitorFilter: the query parameters of GET /v1/monitor are
// what models.ParseMonitorFilter reads: every documented type and the
// endpoint range are accepted, values outside them refused.
func TestOpenAPIMonitorFilter(t *testing.T) {
	doc, _ := loadDocument(t)
	var op struct {
		Parameters []struct {
			Name   string `json:"name"`
			In     string `json:"in"`
			Schema struct {
				Enum    []string `json:"enum"`
				Minimum *int     `json:"minimum"`
				Maximum *int     `json:"maximum"`
			} `json:"schema"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(doc.Paths["/v1/monitor"]["get"], &op); err != nil {
		t.Fatalf("GET /v1/monitor: %v", err)
	}
	parse := func(key, value string) error {
		_, err := models.ParseMonitorFilter(url.Values{key: {value}})
		return err
	}
	var names []string
	for _, p := range op.Parameters {
		if p.In != "query" {
			continue
		}
		names = append(names, p.Name)
		switch p.Name {
		case "type":
			if len(p.Schema.Enum) == 0 {
				t.Error("parameter type: no enum")
			}
			for _, v := range p.Schema.Enum {
				if err := parse("type", v); err != nil {
					t.Errorf("parameter type: documented value %q refused: %v", v, err)
				}
			}
			if err := parse("type", "drops"); err == nil {
				t.Error(`parameter type: undocumented value "drops" accepted`)
			}
		case "endpoint":
			if p.Schema.Minimum == nil || p.Schema.Maximum == nil {
				t.Fatal("parameter endpoint: no minimum or maximum")
			}
			lo, hi := *p.Schema.Minimum, *p.Schema.Maximum
			for _, v := range []int{lo, hi} {
				if err := parse("endpoint", strconv.Itoa(v)); err != nil {
					t.Errorf("parameter endpoint: documented value %d refused: %v", v, err)
				}
			}
			for _, v := range []int{lo - 1, hi + 1} {
				if err := parse("endpoint", strconv.Itoa(v)); err == nil {
					t.Errorf("parameter endpoint: %d, outside [%d, %d], accepted", v, lo, hi)
				}
			}
		default:
			t.Errorf("parameter %s: models.ParseMonitorFilter does not read it", p.Name)
		}
	}
	if q := (models.MonitorFilter{Type: models.MonitorTypeDrop, Endpoint: 7}).Query(); !slices.Equal(slices.Sorted(maps.Keys(q)), slices.Sorted(slices.Values(names))) {
		t.Errorf("MonitorFilter.Query() sends %v, the document has parameters %v", q, names)
	}
}

// TestErrorModelMatchesServer: what the API server writes for an error is
// the documented Error model.
func TestErrorModelMatchesServer(t *testing.T) {
	doc, _ := loadDocument(t)
	s := doc.Components.Schemas["Error"]
	rec := httptest.NewRecorder()
	apiserver.WriteError(rec, apiserver.Errorf(http.StatusConflict, "taken"))
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, slices.Sorted(slices.Values(s.Required))) {
		t.Errorf("the server's error body has keys %v, the Error schema requires %v", keys, s.Required)
	}
	if rec.Code != http.StatusConflict || got["code"] != float64(http.StatusConflict) {
		t.Errorf("error answer: status %d, body %v", rec.Code, got)
	}
}
