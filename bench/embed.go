package bench

import (
	"embed"
	"io/fs"
	"path"
	"slices"
)

//go:embed scenarios/*.yaml
var scenarioFS embed.FS

// DefaultScenario returns the YAML of the built-in default scenario
// (scenarios/default.yaml), which cmd/loadgen runs when given no file.
func DefaultScenario() []byte {
	b, err := scenarioFS.ReadFile("scenarios/default.yaml")
	if err != nil {
		panic(err) // embedded at build time
	}
	return b
}

// SampleScenarios returns the names of the sample scenario files shipped
// in scenarios/, sorted, e.g. "default.yaml".
func SampleScenarios() []string {
	ents, _ := fs.ReadDir(scenarioFS, "scenarios")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

// SampleScenario returns the YAML of the sample scenario file name.
func SampleScenario(name string) ([]byte, error) {
	return scenarioFS.ReadFile(path.Join("scenarios", name))
}
