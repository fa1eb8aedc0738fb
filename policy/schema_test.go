package policy

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/reroute-go/reroute/internal/yamlkeys"
)

// The JSON Schema of the configuration file ships in docs/. These tests keep
// it in step with the Go types (both directions), and validate every
// example configuration of the repository against it with a small checker
// that supports only the keywords the schema uses.

const schemaPath = "../docs/reroute.schema.json"

// schemaKeywords are the keywords the checker understands; the schema may
// use no other, so that nothing is silently ignored.
var schemaKeywords = map[string]bool{
	"$schema": true, "$id": true, "$defs": true, "$ref": true, "title": true, "description": true,
	"type": true, "properties": true, "additionalProperties": true, "required": true, "enum": true,
	"items": true, "minItems": true, "minimum": true, "maximum": true, "minLength": true,
	"pattern": true, "oneOf": true, "anyOf": true,
}

type schema = map[string]any

type schemaDoc struct {
	root    schema
	regexps map[string]*regexp.Regexp
}

func loadSchema(t testing.TB) *schemaDoc {
	t.Helper()
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var root schema
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	return &schemaDoc{root: root, regexps: map[string]*regexp.Regexp{}}
}

// resolve follows $ref (local "#/$defs/name" only).
func (d *schemaDoc) resolve(t testing.TB, s schema) schema {
	t.Helper()
	for range 10 {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		name, ok := strings.CutPrefix(ref, "#/$defs/")
		defs, _ := d.root["$defs"].(map[string]any)
		target, found := defs[name].(map[string]any)
		if !ok || !found {
			t.Fatalf("unresolvable $ref %q", ref)
		}
		s = target
	}
	t.Fatal("$ref chain too long")
	return nil
}

// TestSchemaKeywords checks the schema itself: only supported keywords,
// every $ref resolves, every $defs entry is used, every pattern compiles,
// every object closed, every property described.
func TestSchemaKeywords(t *testing.T) {
	d := loadSchema(t)
	if d.root["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v, want draft 2020-12", d.root["$schema"])
	}
	used := map[string]bool{}
	var visit func(s schema, at string)
	visit = func(s schema, at string) {
		for k, v := range s {
			if !schemaKeywords[k] {
				t.Errorf("%s: keyword %q is not supported by the checker", at, k)
			}
			switch k {
			case "$ref":
				ref := v.(string)
				used[strings.TrimPrefix(ref, "#/$defs/")] = true
				d.resolve(t, s)
			case "pattern":
				if _, err := regexp.Compile(v.(string)); err != nil {
					t.Errorf("%s: pattern: %v", at, err)
				}
			case "properties", "$defs":
				for name, sub := range v.(map[string]any) {
					visit(sub.(map[string]any), at+"/"+k+"/"+name)
				}
			case "items":
				visit(v.(map[string]any), at+"/items")
			case "oneOf", "anyOf":
				for i, sub := range v.([]any) {
					visit(sub.(map[string]any), fmt.Sprintf("%s/%s/%d", at, k, i))
				}
			case "additionalProperties":
				if v != false {
					t.Errorf("%s: additionalProperties must be false", at)
				}
			}
		}
		if s["type"] == "object" && s["additionalProperties"] != false {
			t.Errorf("%s: object without additionalProperties: false", at)
		}
		if props, ok := s["properties"].(map[string]any); ok {
			for name, p := range props {
				ps := p.(map[string]any)
				if _, ok := ps["description"]; !ok {
					if _, ok := d.resolve(t, ps)["description"]; !ok {
						t.Errorf("%s/properties/%s: no description", at, name)
					}
				}
			}
		}
	}
	visit(d.root, "#")
	for name := range d.root["$defs"].(map[string]any) {
		if !used[name] {
			t.Errorf("$defs/%s is never referenced", name)
		}
	}
}

// Expected enum values of the Go string types.
var goEnums = map[reflect.Type][]string{
	reflect.TypeFor[Strategy]():     {string(SameModel), string(SameProvider), string(DifferentProvider)},
	reflect.TypeFor[Measure]():      {string(MeasureTTFB), string(MeasureTotal)},
	reflect.TypeFor[Scope]():        {string(ScopeModel), string(ScopeProvider)},
	reflect.TypeFor[ApplyTo]():      {string(ApplyGlobal), string(ApplyRequest)},
	reflect.TypeFor[BackoffApply](): {string(BackoffSameModel), string(BackoffSameProvider), string(BackoffGlobal)},
	reflect.TypeFor[Jitter]():       {string(JitterNone), string(JitterEqual), string(JitterFull), string(JitterDecorrelated)},
}

// Leaf types with their own YAML decoding, and the JSON types they accept.
var goCustomLeaves = map[reflect.Type][]string{
	reflect.TypeFor[CodeSpec](): {"integer", "string"},
	reflect.TypeFor[Jitter]():   {"boolean", "string"},
	reflect.TypeFor[Duration](): {"integer", "string"},
}

// TestSchemaMatchesGoTypes walks the yaml tags reachable from Config and the
// schema side by side: every key is in the schema at the same place with a
// matching type, every schema property is a key, required matches the keys
// without omitempty, and enums match the Go constants.
func TestSchemaMatchesGoTypes(t *testing.T) {
	d := loadSchema(t)
	keys := 0
	var walkType func(typ reflect.Type, s schema, path string)
	walkType = func(typ reflect.Type, s schema, path string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		s = d.resolve(t, s)
		types := d.jsonTypes(t, s)
		if want, ok := goCustomLeaves[typ]; ok {
			if !slices.Equal(types, want) {
				t.Errorf("%s: schema types %v, want %v", path, types, want)
			}
		}
		if want, ok := goEnums[typ]; ok {
			got := d.enumStrings(t, s)
			sort.Strings(got)
			w := slices.Clone(want)
			sort.Strings(w)
			if !slices.Equal(got, w) {
				t.Errorf("%s: schema enum %v, Go constants %v", path, got, w)
			}
		}
		if _, custom := goCustomLeaves[typ]; custom {
			return
		}
		var want []string
		switch typ.Kind() {
		case reflect.Struct:
			want = []string{"object"}
		case reflect.Slice:
			want = []string{"array"}
		case reflect.String:
			want = []string{"string"}
		case reflect.Int:
			want = []string{"integer"}
		case reflect.Float64:
			want = []string{"number"}
		case reflect.Bool:
			want = []string{"boolean"}
		default:
			t.Fatalf("%s: Go kind %s not handled by the test", path, typ.Kind())
		}
		if !slices.Equal(types, want) {
			t.Errorf("%s: schema types %v, Go %s wants %v", path, types, typ, want)
		}
		switch typ.Kind() {
		case reflect.Slice:
			items, ok := s["items"].(map[string]any)
			if !ok {
				t.Errorf("%s: array without items", path)
				return
			}
			walkType(typ.Elem(), items, path+"[]")
		case reflect.Struct:
			props, _ := s["properties"].(map[string]any)
			var required []string
			for _, r := range asSlice(s["required"]) {
				required = append(required, r.(string))
			}
			var goRequired []string
			seen := map[string]bool{}
			for i := range typ.NumField() {
				f := typ.Field(i)
				if !f.IsExported() {
					continue
				}
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if name == "" || name == "-" {
					t.Errorf("%s: field %s without a yaml name", path, f.Name)
					continue
				}
				keys++
				seen[name] = true
				if !strings.Contains(opts, "omitempty") {
					goRequired = append(goRequired, name)
				}
				p, ok := props[name].(map[string]any)
				if !ok {
					t.Errorf("%s.%s: key missing from the schema", path, name)
					continue
				}
				walkType(f.Type, p, yamlkeys.Join(path, name))
			}
			for name := range props {
				if !seen[name] {
					t.Errorf("%s.%s: schema property is not a key of %s", path, name, typ)
				}
			}
			sort.Strings(required)
			sort.Strings(goRequired)
			if !slices.Equal(required, goRequired) {
				t.Errorf("%s: schema requires %v, Go (keys without omitempty) %v", path, required, goRequired)
			}
		}
	}
	walkType(reflect.TypeFor[Config](), d.root, "")
	if keys < 50 {
		t.Errorf("only %d keys walked", keys)
	}
	// provider_interface is a plain string in Go, checked by validation.
	mp := d.resolve(t, d.root["$defs"].(map[string]any)["model_provider"].(map[string]any))
	pi := mp["properties"].(map[string]any)["provider_interface"].(map[string]any)
	if got := d.enumStrings(t, pi); !slices.Equal(got, []string{"openai", "anthropic"}) {
		t.Errorf("provider_interface enum %v", got)
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// jsonTypes returns the sorted JSON types a schema admits.
func (d *schemaDoc) jsonTypes(t testing.TB, s schema) []string {
	t.Helper()
	s = d.resolve(t, s)
	set := map[string]bool{}
	switch ty := s["type"].(type) {
	case string:
		set[ty] = true
	case []any:
		for _, x := range ty {
			set[x.(string)] = true
		}
	}
	if _, ok := s["type"]; !ok {
		for _, e := range asSlice(s["enum"]) {
			set[jsonType(e)] = true
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		for _, sub := range asSlice(s[k]) {
			for _, x := range d.jsonTypes(t, sub.(map[string]any)) {
				set[x] = true
			}
		}
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// enumStrings returns the string enum values of s or of its oneOf/anyOf
// branches.
func (d *schemaDoc) enumStrings(t testing.TB, s schema) []string {
	t.Helper()
	s = d.resolve(t, s)
	var out []string
	for _, e := range asSlice(s["enum"]) {
		if str, ok := e.(string); ok {
			out = append(out, str)
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		for _, sub := range asSlice(s[k]) {
			out = append(out, d.enumStrings(t, sub.(map[string]any))...)
		}
	}
	return out
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case int, int64, uint64:
		return "integer"
	case float64:
		if x == math.Trunc(x) && !math.IsInf(x, 0) {
			return "integer" // as in JSON Schema, 2.0 is an integer; yaml.v3 decodes it into an int
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("unknown(%T)", v)
}

func numeric(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// validate checks v against s and returns one message per violation, each
// naming the instance path.
func (d *schemaDoc) validate(t testing.TB, v any, s schema, at string) []string {
	t.Helper()
	var errs []string
	fail := func(format string, args ...any) {
		errs = append(errs, at+": "+fmt.Sprintf(format, args...))
	}
	if _, ok := s["$ref"]; ok {
		errs = append(errs, d.validate(t, v, d.resolve(t, s), at)...)
	}
	if ty, ok := s["type"]; ok {
		got := jsonType(v)
		var allowed []string
		switch x := ty.(type) {
		case string:
			allowed = []string{x}
		case []any:
			for _, e := range x {
				allowed = append(allowed, e.(string))
			}
		}
		match := slices.Contains(allowed, got) || (got == "integer" && slices.Contains(allowed, "number"))
		if !match {
			fail("is %s, want %s", got, strings.Join(allowed, " or "))
			return errs // the other keywords would only repeat it
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		if !slices.ContainsFunc(enum, func(e any) bool { return reflect.DeepEqual(e, v) }) {
			fail("%v is not one of %v", v, enum)
		}
	}
	if n, ok := numeric(v); ok {
		if m, ok := s["minimum"].(float64); ok && n < m {
			fail("%v is less than the minimum %v", v, m)
		}
		if m, ok := s["maximum"].(float64); ok && n > m {
			fail("%v is greater than the maximum %v", v, m)
		}
	}
	if str, ok := v.(string); ok {
		if m, ok := s["minLength"].(float64); ok && float64(len([]rune(str))) < m {
			fail("%q is shorter than %v", str, m)
		}
		if p, ok := s["pattern"].(string); ok {
			re := d.regexps[p]
			if re == nil {
				re = regexp.MustCompile(p)
				d.regexps[p] = re
			}
			if !re.MatchString(str) {
				fail("%q does not match %s", str, p)
			}
		}
	}
	if arr, ok := v.([]any); ok {
		if m, ok := s["minItems"].(float64); ok && float64(len(arr)) < m {
			fail("has %d items, want at least %v", len(arr), m)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range arr {
				errs = append(errs, d.validate(t, e, items, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	if obj, ok := v.(map[string]any); ok {
		props, _ := s["properties"].(map[string]any)
		for _, r := range asSlice(s["required"]) {
			if _, ok := obj[r.(string)]; !ok {
				fail("required key %q is missing", r)
			}
		}
		names := make([]string, 0, len(obj))
		for k := range obj {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			sub, ok := props[k].(map[string]any)
			switch {
			case ok:
				errs = append(errs, d.validate(t, obj[k], sub, yamlkeys.Join(at, k))...)
			case s["additionalProperties"] == false:
				fail("key %q is not allowed", k)
			}
		}
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		branches := asSlice(s[k])
		if len(branches) == 0 {
			continue
		}
		matched := 0
		var sub []string
		for _, b := range branches {
			e := d.validate(t, v, b.(map[string]any), at)
			if len(e) == 0 {
				matched++
			}
			sub = append(sub, e...)
		}
		switch {
		case matched == 0:
			fail("matches no branch of %s: %s", k, strings.Join(sub, "; "))
		case k == "oneOf" && matched > 1:
			fail("matches %d branches of oneOf", matched)
		}
	}
	return errs
}

// example is a configuration found in the repository.
type example struct {
	where string
	src   []byte
	node  *yaml.Node // the configuration node when nested (a scenario's config key)
}

// repoExamples finds every example configuration: YAML files anywhere in
// the repository (skipping invalid fixtures and files that are not
// configurations; a load generator scenario's config key counts), and YAML
// blocks of the README and docs/*.md that start with model_providers.
func repoExamples(t testing.TB) []example {
	t.Helper()
	var out []example
	err := filepath.WalkDir("..", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			switch e.Name() {
			case ".git", "invalid", "node_modules", "vendor":
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var doc yaml.Node
		if yaml.Unmarshal(src, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
			return nil
		}
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			switch k, v := m.Content[i].Value, m.Content[i+1]; {
			case k == "model_providers":
				out = append(out, example{where: path, src: src})
				return nil
			case k == "config" && v.Kind == yaml.MappingNode:
				out = append(out, example{where: path + ":config", src: src, node: v})
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, _ := filepath.Glob("../docs/*.md")
	for _, md := range append([]string{"../README.md"}, docs...) {
		src, err := os.ReadFile(md)
		if err != nil {
			continue
		}
		for i, block := range yamlBlocks(string(src)) {
			if strings.HasPrefix(block, "model_providers:") {
				out = append(out, example{where: fmt.Sprintf("%s block %d", md, i+1), src: []byte(block)})
			}
		}
	}
	return out
}

// yamlBlocks returns the ```yaml fenced blocks of a Markdown text.
func yamlBlocks(md string) []string {
	var out []string
	for {
		_, rest, ok := strings.Cut(md, "```yaml\n")
		if !ok {
			return out
		}
		block, after, ok := strings.Cut(rest, "```")
		if !ok {
			return out
		}
		out = append(out, block)
		md = after
	}
}

// toGeneric decodes YAML into maps, slices and scalars, as a JSON Schema
// validator sees a document.
func toGeneric(t testing.TB, ex example) any {
	t.Helper()
	var v any
	var err error
	if ex.node != nil {
		err = ex.node.Decode(&v)
	} else {
		err = yaml.Unmarshal(ex.src, &v)
	}
	if err != nil {
		t.Fatalf("%s: %v", ex.where, err)
	}
	return v
}

// TestSchemaValidatesExamples: every example configuration of the
// repository is valid under the schema and loads.
func TestSchemaValidatesExamples(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-openai-test")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-test")
	t.Setenv("REDIS_PASSWORD", "redis-test") // docs/shared-health.md's example
	d := loadSchema(t)
	exs := repoExamples(t)
	patterns := 0
	for _, ex := range exs {
		if strings.Contains(ex.where, "testdata/patterns/") {
			patterns++
		}
		t.Run(strings.TrimPrefix(ex.where, "../"), func(t *testing.T) {
			for _, e := range d.validate(t, toGeneric(t, ex), d.root, "") {
				t.Errorf("schema: %s", e)
			}
			var err error
			var warns []Warning
			if ex.node != nil {
				_, warns, err = ParseNode(ex.node)
			} else {
				_, warns, err = Parse(ex.src)
			}
			if err != nil {
				t.Errorf("does not load: %v", err)
			}
			// Examples in documentation should not teach configurations
			// that warn.
			if strings.Contains(ex.where, ".md block") && len(warns) > 0 {
				t.Errorf("documentation example warns: %v", warns)
			}
		})
	}
	if patterns != 17 {
		t.Errorf("%d pattern files checked, want 17", patterns)
	}
}

// TestSchemaAgreesWithLoader: configurations the loader rejects for a
// single-key reason are rejected by the schema too, at the same place. (The
// loader checks more: rules across keys, such as max_ms > base_ms.)
func TestSchemaAgreesWithLoader(t *testing.T) {
	d := loadSchema(t)
	invalid, err := os.ReadFile("testdata/invalid/backoff-without-apply-to.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		src  string
		at   string // schema error prefix
	}{
		{"backoff without apply_to", string(invalid), rp + ".backoff: required key \"apply_to\""},
		{"unknown key", withPolicy("fallback_model: [anthropic/claude-3-5-sonnet]"), rp + `: key "fallback_model" is not allowed`},
		{"unknown top-level key", "model_providers:\n  - model: a/b\nretry_policy: {}\n", `: key "retry_policy" is not allowed`},
		{"unknown strategy", withPolicy("default_strategy: random"), rp + ".default_strategy: random is not one of"},
		{"code out of range", withPolicy("on_status_codes:\n  - {codes: [600], strategy: same_model, max_attempts: 1}"), rp + ".on_status_codes[0].codes[0]: matches no branch"},
		{"quoted single code", withPolicy("on_status_codes:\n  - {codes: [\"429\"], strategy: same_model, max_attempts: 1}"), rp + ".on_status_codes[0].codes[0]: matches no branch"},
		{"range malformed", withPolicy("on_status_codes:\n  - {codes: [\"500-\"], strategy: same_model, max_attempts: 1}"), rp + ".on_status_codes[0].codes[0]: matches no branch"},
		{"entry without max_attempts", withPolicy("on_status_codes:\n  - {codes: [429], strategy: same_model}"), rp + ".on_status_codes[0]: required key \"max_attempts\""},
		{"string count", withPolicy("default_max_attempts: \"2\""), rp + ".default_max_attempts: is string, want integer"},
		{"fractional count", withPolicy("default_max_attempts: 2.5"), rp + ".default_max_attempts: is number, want integer"},
		{"negative count", withPolicy("default_max_attempts: -1"), rp + ".default_max_attempts: -1 is less than the minimum"},
		{"zero base_ms", withPolicy("backoff: {apply_to: global, base_ms: 0}"), rp + ".backoff.base_ms: 0 is less than the minimum"},
		{"zero on_timeout max_attempts", withPolicy("on_timeout: {strategy: same_model, max_attempts: 0}"), rp + ".on_timeout.max_attempts: 0 is less than the minimum"},
		{"unknown jitter", withPolicy("backoff: {apply_to: global, jitter: linear}"), rp + ".backoff.jitter: matches no branch"},
		{"fallback without slash", withPolicy("fallback_models: [gpt-4o-mini]"), rp + ".fallback_models[0]: \"gpt-4o-mini\" does not match"},
		{"no providers", "model_providers: []\n", "model_providers: has 0 items"},
		{"model missing", "model_providers:\n  - base_url: https://x\n", "model_providers[0]: required key \"model\""},
		{"unknown provider_interface", "model_providers:\n  - model: a/b\n    provider_interface: gemini\n", "model_providers[0].provider_interface: gemini is not one of"},
		{"hinted wait over a day", withPolicy("retry_after_handling: {max_retry_after_seconds: 18446744074}"), rp + ".retry_after_handling.max_retry_after_seconds: 18446744074 is greater than the maximum"},
		{"min_triggers over 1000", withPolicy("on_high_latency: {threshold_ms: 2000, min_triggers: 1001, trigger_window_seconds: 60, strategy: same_model, max_attempts: 2}"), rp + ".on_high_latency.min_triggers: 1001 is greater than the maximum"},
		{"backoff max_ms over a day", withPolicy("backoff: {apply_to: global, max_ms: 86400001}"), rp + ".backoff.max_ms: 86400001 is greater than the maximum"},
		{"timeout over a day", "model_providers:\n  - model: a/b\nengine:\n  timeouts: {attempt: 86401}\n", "engine.timeouts.attempt: matches no branch"},
		{"budget window over an hour", "model_providers:\n  - model: a/b\nengine:\n  retry_budget: {window: 3601}\n", "engine.retry_budget.window: 3601 is greater than the maximum"},
		{"percent above 100", "model_providers:\n  - model: a/b\nengine:\n  retry_budget: {percent: 101}\n", "engine.retry_budget.percent: 101 is greater than the maximum"},
		{"malformed duration", "model_providers:\n  - model: a/b\nengine:\n  timeouts: {connect: 5 seconds}\n", "engine.timeouts.connect: matches no branch"},
		{"negative duration", "model_providers:\n  - model: a/b\nengine:\n  timeouts: {connect: -5s}\n", "engine.timeouts.connect: matches no branch"},
		{"fractional seconds", "model_providers:\n  - model: a/b\nengine:\n  timeouts: {connect: 1.5}\n", "engine.timeouts.connect: matches no branch"},
		{"no consecutive failures", "model_providers:\n  - model: a/b\nengine:\n  passive_health: {consecutive_failures: 0}\n", "engine.passive_health.consecutive_failures: 0 is less than the minimum"},
		{"consecutive failures over 1000", "model_providers:\n  - model: a/b\n    passive_health: {consecutive_failures: 1001}\n", "model_providers[0].passive_health.consecutive_failures: 1001 is greater than the maximum"},
		{"zero cooldown", "model_providers:\n  - model: a/b\n    passive_health: {cooldown: 0}\n", "model_providers[0].passive_health.cooldown: 0 is less than the minimum"},
		{"max_cooldown over an hour", "model_providers:\n  - model: a/b\nengine:\n  passive_health: {max_cooldown: 3601}\n", "engine.passive_health.max_cooldown: 3601 is greater than the maximum"},
		{"unknown passive_health scope", "model_providers:\n  - model: a/b\n    passive_health: {scope: region}\n", "model_providers[0].passive_health.scope: region is not one of"},
		{"shared_health queue_size 0", "model_providers:\n  - model: a/b\nengine:\n  shared_health: {address: \"r:1\", queue_size: 0}\n", "engine.shared_health.queue_size: 0 is less than the minimum"},
		{"shared_health glob in key_prefix", "model_providers:\n  - model: a/b\nengine:\n  shared_health: {address: \"r:1\", key_prefix: \"a*\"}\n", "engine.shared_health.key_prefix: \"a*\" does not match"},
		{"shared_health timeout over a minute", "model_providers:\n  - model: a/b\nengine:\n  shared_health: {address: \"r:1\", timeout: 61}\n", "engine.shared_health.timeout: 61 is greater than the maximum"},
		{"unknown shared_health key", "model_providers:\n  - model: a/b\nengine:\n  shared_health: {address: \"r:1\", tls: {verify: false}}\n", `engine.shared_health.tls: key "verify" is not allowed`},
		{"unknown passive_health key", "model_providers:\n  - model: a/b\nengine:\n  passive_health: {threshold: 5}\n", `engine.passive_health: key "threshold" is not allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Parse([]byte(tt.src)); err == nil {
				t.Errorf("the loader accepts it")
			}
			var v any
			if err := yaml.Unmarshal([]byte(tt.src), &v); err != nil {
				t.Fatal(err)
			}
			errs := d.validate(t, v, d.root, "")
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, tt.at) }) {
				t.Errorf("schema errors %q, want one starting %q", errs, tt.at)
			}
		})
	}

	// And forms the loader accepts, the schema accepts.
	for _, src := range []string{
		withPolicy("backoff: {apply_to: global, jitter: false}\ndefault_max_attempts: 2.0"),
		withPolicy("backoff: {apply_to: global, jitter: decorrelated}"),
		withPolicy("on_status_codes:\n  - {codes: [429, \" 500 - 504 \", \"100-599\"], strategy: same_model, max_attempts: 0}"),
		"model_providers:\n  - model: a/b\n    timeouts: {connect: 0, headers: \"0\", idle: 1h2m3.5s, attempt: 300ms}\nengine:\n  retry_budget: {percent: 12.5, min_per_second: 0, window: 10}\n",
		"model_providers:\n  - model: a/b\n    passive_health: {enabled: false, cooldown: 1, max_cooldown: 1h}\nengine:\n  passive_health: {consecutive_failures: 1000, cooldown: 250ms, max_cooldown: 3600, scope: provider}\n",
		"model_providers:\n  - model: a/b\nengine:\n  shared_health: {address: \"redis:6379\", username: gw, password: pw, db: 2, tls: {enabled: false}, key_prefix: \"gw:\", channel: \"gw:health\", replica_id: a1, timeout: 250ms, max_backoff: 2, probe_lock: true, probe_lock_ttl: 3s, queue_size: 64}\n",
	} {
		if _, _, err := Parse([]byte(src)); err != nil {
			t.Errorf("loader: %v\n%s", err, src)
		}
		var v any
		if err := yaml.Unmarshal([]byte(src), &v); err != nil {
			t.Fatal(err)
		}
		if errs := d.validate(t, v, d.root, ""); len(errs) != 0 {
			t.Errorf("schema rejects a configuration the loader accepts: %q\n%s", errs, src)
		}
	}
}
