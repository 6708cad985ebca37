// chart-render: what helm-controller would apply for one HelmRelease, rendered offline.
//
// It runs the Helm library helm-controller v1.4.3 links (helm.sh/helm/v3 v3.19.0) the way an
// install does (action.Install.RunWithContext): dependencies processed with the values,
// the release options of a first install, the chart's values.schema.json enforced, the chart's
// kubeVersion checked, every template rendered with no cluster to look up (`lookup` returns
// nothing, as in `helm template`), and the result split into manifests and hooks in install order.
//
// Input (stdin, JSON): {"chart": PATH.tgz, "name": RELEASE, "namespace": NS, "values": {...},
// "defaultValues": {...} (optional: replaces the chart's values.yaml, as valuesFiles do),
// "kubeVersion": "v1.34.4"}. Output (stdout, JSON): {"manifests": [{"source", "content"}],
// "hooks": [{"source", "content", "events"}]}. A chart that does not render exits 1 with Helm's
// own message on stderr.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
)

type request struct {
	Chart     string                 `json:"chart"`
	Name      string                 `json:"name"`
	Namespace string                 `json:"namespace"`
	Values    map[string]interface{} `json:"values"`
	// The chart's default values as source-controller rewrites them for spec.chart.spec.valuesFiles
	// (OverwriteChartDefaultValues): they replace values.yaml when given.
	DefaultValues map[string]interface{} `json:"defaultValues,omitempty"`
	KubeVersion   string                 `json:"kubeVersion"`
	// spec.install.disableSchemaValidation, as helm-controller passes it to the install.
	SkipSchemaValidation bool `json:"skipSchemaValidation"`
}

type rendered struct {
	Source  string   `json:"source"`
	Content string   `json:"content"`
	Events  []string `json:"events,omitempty"`
}

type response struct {
	Manifests []rendered `json:"manifests"`
	Hooks     []rendered `json:"hooks"`
}

func render(req request) (*response, error) {
	chrt, err := loader.Load(req.Chart)
	if err != nil {
		return nil, fmt.Errorf("loading the chart %s: %w", req.Chart, err)
	}
	// action.CheckDependencies, as an install runs it: a dependency Chart.yaml names must be in charts/.
	for _, dependency := range chrt.Metadata.Dependencies {
		found := false
		for _, have := range chrt.Dependencies() {
			if have.Name() == dependency.Name {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("found in Chart.yaml, but missing in charts/ directory: %s "+
				"(run `helm dependency build` in the chart's folder before giving it)", dependency.Name)
		}
	}
	if len(req.DefaultValues) > 0 {
		chrt.Values = req.DefaultValues
	}
	values := req.Values
	if values == nil {
		values = map[string]interface{}{}
	}
	if err := chartutil.ProcessDependenciesWithMerge(chrt, values); err != nil {
		return nil, fmt.Errorf("chart dependencies: %w", err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	if req.KubeVersion != "" {
		version, err := chartutil.ParseKubeVersion(req.KubeVersion)
		if err != nil {
			return nil, err
		}
		caps.KubeVersion = *version
	}
	if chrt.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(chrt.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return nil, fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s",
			chrt.Metadata.KubeVersion, caps.KubeVersion.String())
	}
	options := chartutil.ReleaseOptions{Name: req.Name, Namespace: req.Namespace, Revision: 1, IsInstall: true}
	toRender, err := chartutil.ToRenderValuesWithSchemaValidation(chrt, values, options, caps, req.SkipSchemaValidation)
	if err != nil {
		return nil, err
	}
	var e engine.Engine
	files, err := e.Render(chrt, toRender)
	if err != nil {
		return nil, err
	}
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}
	out := &response{Manifests: []rendered{}, Hooks: []rendered{}}
	for _, m := range manifests {
		out.Manifests = append(out.Manifests, rendered{Source: m.Name, Content: m.Content})
	}
	for _, h := range hooks {
		events := []string{}
		for _, event := range h.Events {
			events = append(events, string(event))
		}
		out.Hooks = append(out.Hooks, rendered{Source: h.Path, Content: h.Manifest, Events: events})
	}
	return out, nil
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "chart-render: reading the request: %v\n", err)
		os.Exit(2)
	}
	out, err := render(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "chart-render: %v\n", err)
		os.Exit(2)
	}
}
