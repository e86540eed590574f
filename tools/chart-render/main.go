// Command chart-render renders a Helm chart the way `helm template` does, for machines without
// helm: Go text/template with the sprig functions and helm's own (include, tpl, toYaml, fromYaml,
// required, fail, lookup), values from values.yaml deep-merged with -f files and --set, and the
// merged values checked against values.schema.json (a small JSON Schema subset).
//
// Build in GOPATH mode against the Debian packages golang-github-masterminds-sprig-dev and
// golang-gopkg-yaml.v3-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go run tools/chart-render/main.go \
//	    [--namespace NS] [-f values.yaml]... [--set a.b=c]... [--set-string a.b=c]... [--notes] [RELEASE] CHART_DIR
//
// Output: every manifest as `---\n# Source: <chart>/templates/<file>\n<yaml>`, sorted by kind in
// helm's install order. A template error (fail, required, a parse error) or a schema violation is
// printed to stderr and the exit status is 1. --notes prints the rendered NOTES.txt instead.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

type setArg struct {
	expr     string
	asString bool
}

type options struct {
	release, namespace string
	valueFiles         []string
	sets               []setArg
	notes              bool
	chart              string
}

func main() {
	opts, err := parseArgs(os.Args[1:])
	if err == nil {
		err = run(opts, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func parseArgs(args []string) (*options, error) {
	o := &options{release: "release-name", namespace: "default"}
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, arg)
			continue
		}
		name, val, inline := arg, "", false
		if eq := strings.Index(arg, "="); eq > 0 {
			name, val, inline = arg[:eq], arg[eq+1:], true
		}
		value := func() (string, error) {
			if inline {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag %s needs a value", name)
			}
			i++
			return args[i], nil
		}
		var err error
		switch name {
		case "-f", "--values":
			var v string
			v, err = value()
			o.valueFiles = append(o.valueFiles, v)
		case "--set", "--set-string":
			var v string
			v, err = value()
			o.sets = append(o.sets, setArg{expr: v, asString: name == "--set-string"})
		case "-n", "--namespace":
			o.namespace, err = value()
		case "--release", "--name":
			o.release, err = value()
		case "--notes":
			o.notes = true
		default:
			err = fmt.Errorf("unknown flag %s (flags: -f, --set, --set-string, --namespace, --release, --notes)", name)
		}
		if err != nil {
			return nil, err
		}
	}
	switch len(positional) {
	case 1:
		o.chart = positional[0]
	case 2:
		o.release, o.chart = positional[0], positional[1]
	default:
		return nil, errors.New("usage: chart-render [flags] [RELEASE] CHART_DIR")
	}
	return o, nil
}

// ---- values ----

// normalize turns decoded YAML into what helm's templates see: string-keyed maps, and every
// number from a file as float64 (helm reads values through JSON).
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, x := range t {
			t[k] = normalize(x)
		}
		return t
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[fmt.Sprint(k)] = normalize(x)
		}
		return m
	case []interface{}:
		for i, x := range t {
			t[i] = normalize(x)
		}
		return t
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	}
	return v
}

func readYAMLMap(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if raw == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := normalize(raw).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: top level is not a map", path)
	}
	return m, nil
}

// merge deep-merges src into dst (src wins); a null in src deletes the key, as in helm.
func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := v.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			merge(dm, sm)
		} else {
			dst[k] = v
		}
	}
}

// splitUnescaped splits s at sep outside braces; a backslash escapes the next character and is
// kept (unescape removes it later).
func splitUnescaped(s string, sep rune) []string {
	var parts []string
	var cur strings.Builder
	depth, escaped := 0, false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
			continue
		case r == '\\':
			escaped = true
		case r == '{':
			depth++
		case r == '}' && depth > 0:
			depth--
		case r == sep && depth == 0:
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	return append(parts, cur.String())
}

func unescape(s string) string {
	var b strings.Builder
	escaped := false
	for _, r := range s {
		if !escaped && r == '\\' {
			escaped = true
			continue
		}
		escaped = false
		b.WriteRune(r)
	}
	return b.String()
}

// typedValue mirrors helm's strvals: true/false/null and plain integers are typed, the rest is a string.
func typedValue(s string, asString bool) interface{} {
	if asString {
		return s
	}
	switch {
	case strings.EqualFold(s, "true"):
		return true
	case strings.EqualFold(s, "false"):
		return false
	case strings.EqualFold(s, "null"):
		return nil
	case s == "0":
		return int64(0)
	}
	if s != "" && s[0] != '0' {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	}
	return s
}

// applySet applies one --set expression (`a.b=c,d=e`, `\,` and `\.` escaped, `{x,y}` lists).
func applySet(into map[string]interface{}, arg setArg) error {
	for _, assignment := range splitUnescaped(arg.expr, ',') {
		if assignment == "" {
			continue
		}
		kv := splitUnescaped(assignment, '=')
		if len(kv) < 2 {
			return fmt.Errorf("--set %s: key %q has no value", arg.expr, unescape(kv[0]))
		}
		rawValue := strings.Join(kv[1:], "=")
		var value interface{}
		if strings.HasPrefix(rawValue, "{") && strings.HasSuffix(rawValue, "}") {
			items := []interface{}{}
			for _, item := range splitUnescaped(rawValue[1:len(rawValue)-1], ',') {
				if item != "" {
					items = append(items, typedValue(unescape(item), arg.asString))
				}
			}
			value = items
		} else {
			value = typedValue(unescape(rawValue), arg.asString)
		}
		path := splitUnescaped(kv[0], '.')
		node := into
		for i, part := range path {
			key := unescape(part)
			if key == "" || strings.ContainsAny(key, "[]") {
				return fmt.Errorf("--set %s: unsupported key %q", arg.expr, kv[0])
			}
			if i == len(path)-1 {
				node[key] = value
				break
			}
			next, ok := node[key].(map[string]interface{})
			if !ok {
				next = map[string]interface{}{}
				node[key] = next
			}
			node = next
		}
	}
	return nil
}

// ---- values.schema.json (type, enum, required, properties, additionalProperties, items,
// minimum, maximum, minLength, pattern, anyOf) ----

func typeOf(v interface{}) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case map[string]interface{}:
		return "object"
	case []interface{}:
		return "array"
	case float64:
		if t == math.Trunc(t) {
			return "integer"
		}
		return "number"
	case int, int64:
		return "integer"
	}
	return fmt.Sprintf("%T", v)
}

func toFloat(v interface{}) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, true
	case int64:
		return float64(t), true
	case int:
		return float64(t), true
	}
	return 0, false
}

func sameValue(a, b interface{}) bool {
	fa, okA := toFloat(a)
	fb, okB := toFloat(b)
	if okA && okB {
		return fa == fb
	}
	return reflect.DeepEqual(a, b)
}

func checkSchema(schema map[string]interface{}, v interface{}, path string, errs *[]string) {
	at := path
	if at == "" {
		at = "(root)"
	}
	fail := func(format string, args ...interface{}) {
		*errs = append(*errs, at+": "+fmt.Sprintf(format, args...))
	}
	if t, ok := schema["type"]; ok {
		var want []string
		switch tt := t.(type) {
		case string:
			want = []string{tt}
		case []interface{}:
			for _, x := range tt {
				want = append(want, fmt.Sprint(x))
			}
		}
		got, matched := typeOf(v), false
		for _, w := range want {
			if w == got || (w == "number" && got == "integer") {
				matched = true
			}
		}
		if !matched {
			fail("got %s, want %s", got, strings.Join(want, " or "))
			return
		}
	}
	if enum, ok := schema["enum"].([]interface{}); ok {
		found := false
		for _, e := range enum {
			found = found || sameValue(e, v)
		}
		if !found {
			fail("%v is not one of %v", v, enum)
		}
	}
	if anyOf, ok := schema["anyOf"].([]interface{}); ok {
		passed := false
		for _, alt := range anyOf {
			var sub []string
			if m, ok := alt.(map[string]interface{}); ok {
				checkSchema(m, v, path, &sub)
			}
			passed = passed || len(sub) == 0
		}
		if !passed {
			fail("matches none of the allowed forms (anyOf)")
		}
	}
	switch t := v.(type) {
	case map[string]interface{}:
		if req, ok := schema["required"].([]interface{}); ok {
			for _, r := range req {
				if _, present := t[fmt.Sprint(r)]; !present {
					fail("missing property %q", r)
				}
			}
		}
		props, _ := schema["properties"].(map[string]interface{})
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			child := path + "." + k
			if path == "" {
				child = k
			}
			if ps, ok := props[k].(map[string]interface{}); ok {
				checkSchema(ps, t[k], child, errs)
				continue
			}
			switch ap := schema["additionalProperties"].(type) {
			case bool:
				if !ap {
					fail("additional property %q is not allowed", k)
				}
			case map[string]interface{}:
				checkSchema(ap, t[k], child, errs)
			}
		}
	case []interface{}:
		if items, ok := schema["items"].(map[string]interface{}); ok {
			for i, x := range t {
				checkSchema(items, x, fmt.Sprintf("%s[%d]", path, i), errs)
			}
		}
	case string:
		if n, ok := toFloat(schema["minLength"]); ok && float64(len(t)) < n {
			fail("shorter than %v characters", n)
		}
		if p, ok := schema["pattern"].(string); ok {
			re, err := regexp.Compile(p)
			if err != nil {
				fail("bad schema pattern %q: %v", p, err)
			} else if !re.MatchString(t) {
				fail("%q does not match %q", t, p)
			}
		}
	}
	if n, ok := toFloat(v); ok {
		if min, ok := toFloat(schema["minimum"]); ok && n < min {
			fail("%v is less than the minimum %v", n, min)
		}
		if max, ok := toFloat(schema["maximum"]); ok && n > max {
			fail("%v is more than the maximum %v", n, max)
		}
	}
}

// ---- templates ----

type versionSet []string

// Has reports whether the API version (or version/Kind) is available, like .Capabilities.APIVersions.Has.
func (v versionSet) Has(s string) bool {
	for _, x := range v {
		if x == s || strings.HasPrefix(s, x+"/") {
			return true
		}
	}
	return false
}

type kubeVersion struct{ Version, Major, Minor, GitVersion string }

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions versionSet
	HelmVersion map[string]string
}

func toYAML(v interface{}) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	_ = enc.Close()
	return strings.TrimSuffix(buf.String(), "\n")
}

func fromYAML(s string) map[string]interface{} {
	var raw interface{}
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	m, ok := normalize(raw).(map[string]interface{})
	if !ok {
		return map[string]interface{}{}
	}
	return m
}

func funcMap(root *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env") // helm removes these: a chart must not depend on the machine rendering it
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["fromYamlArray"] = func(s string) []interface{} {
		var raw []interface{}
		if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
			return []interface{}{err.Error()}
		}
		return normalize(raw).([]interface{})
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return map[string]interface{}{"Error": err.Error()}
		}
		return m
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		clone, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err := clone.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, chartError(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, chartError(msg)
		}
		return v, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", chartError(msg) }
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil // nothing to look up without a cluster, as in `helm template`
	}
	return f
}

// chartError marks a message from fail/required so that execError can report it the way helm
// does: "execution error at (<file>:<line>:<col>): <message>".
func chartError(msg string) error { return fmt.Errorf("HELM[%s]HELM", msg) }

var chartErrorText = regexp.MustCompile(`(?s)HELM\[(.*)\]HELM`)

func execError(err error) error {
	var exec template.ExecError
	if !errors.As(err, &exec) {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) == 3 {
		if m := chartErrorText.FindStringSubmatch(tokens[2]); m != nil {
			return fmt.Errorf("execution error at (%s): %s", tokens[1], m[1])
		}
	}
	return err
}

// installOrder is helm's kind order for `helm template` output.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
	"ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
	"Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
	"StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder)
}

type manifest struct {
	source, body string
	rank         int
}

var separator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// splitManifests splits one file's output into documents, dropping those with nothing but
// whitespace and comments, and checks each parses as YAML.
func splitManifests(source, text string) ([]manifest, error) {
	var out []manifest
	for _, doc := range separator.Split(text, -1) {
		empty := true
		for _, line := range strings.Split(doc, "\n") {
			l := strings.TrimSpace(line)
			if l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if empty {
			continue
		}
		var head struct {
			Kind string `yaml:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("YAML parse error on %s: %w\n%s", source, err, doc)
		}
		out = append(out, manifest{source: source, body: strings.Trim(doc, "\n"), rank: kindRank(head.Kind)})
	}
	return out, nil
}

func run(o *options, w io.Writer) error {
	chartDir := filepath.Clean(o.chart)
	var meta struct {
		APIVersion  string `yaml:"apiVersion"`
		Name        string `yaml:"name"`
		Version     string `yaml:"version"`
		AppVersion  string `yaml:"appVersion"`
		Description string `yaml:"description"`
		Type        string `yaml:"type"`
	}
	chartYAML, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(chartYAML, &meta); err != nil {
		return fmt.Errorf("Chart.yaml: %w", err)
	}
	if meta.Name == "" || meta.Version == "" {
		return errors.New("Chart.yaml: name and version are required")
	}

	values, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range o.valueFiles {
		override, err := readYAMLMap(f)
		if err != nil {
			return err
		}
		merge(values, override)
	}
	for _, s := range o.sets {
		override := map[string]interface{}{}
		if err := applySet(override, s); err != nil {
			return err
		}
		merge(values, override)
	}
	if schemaText, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json")); err == nil {
		var schema map[string]interface{}
		if err := json.Unmarshal(schemaText, &schema); err != nil {
			return fmt.Errorf("values.schema.json: %w", err)
		}
		var problems []string
		checkSchema(schema, values, "", &problems)
		if len(problems) > 0 {
			return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n- %s",
				meta.Name, strings.Join(problems, "\n- "))
		}
	}

	top := map[string]interface{}{
		"Values": values,
		"Chart": map[string]interface{}{
			"Name": meta.Name, "Version": meta.Version, "AppVersion": meta.AppVersion,
			"Description": meta.Description, "Type": meta.Type, "APIVersion": meta.APIVersion,
		},
		"Release": map[string]interface{}{
			"Name": o.release, "Namespace": o.namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": capabilities{
			KubeVersion: kubeVersion{Version: "v1.29.0", Major: "1", Minor: "29", GitVersion: "v1.29.0"},
			APIVersions: versionSet{"v1", "apps/v1", "batch/v1", "autoscaling/v1", "autoscaling/v2",
				"networking.k8s.io/v1", "policy/v1", "rbac.authorization.k8s.io/v1"},
			HelmVersion: map[string]string{"Version": "v3.14.0"},
		},
	}

	// Every file under templates/ joins one template set, so any define is visible everywhere.
	templatesDir := filepath.Join(chartDir, "templates")
	var files []string
	err = filepath.Walk(templatesDir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	root := template.New(meta.Name)
	root.Option("missingkey=zero")
	root.Funcs(funcMap(root))
	var renderable []string
	notes := ""
	for _, path := range files {
		rel, _ := filepath.Rel(templatesDir, path)
		name := meta.Name + "/templates/" + filepath.ToSlash(rel)
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := root.New(name).Parse(string(text)); err != nil {
			return err
		}
		base := filepath.Base(path)
		switch {
		case base == "NOTES.txt":
			notes = name
		case !strings.HasPrefix(base, "_"):
			renderable = append(renderable, name)
		}
	}

	execute := func(name string) (string, error) {
		data := make(map[string]interface{}, len(top)+1)
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{"Name": name, "BasePath": meta.Name + "/templates"}
		var buf strings.Builder
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", execError(err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}

	if o.notes {
		if notes == "" {
			return errors.New("the chart has no templates/NOTES.txt")
		}
		text, err := execute(notes)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, strings.TrimSpace(text))
		return err
	}

	var all []manifest
	for _, name := range renderable {
		text, err := execute(name)
		if err != nil {
			return err
		}
		docs, err := splitManifests(name, text)
		if err != nil {
			return err
		}
		all = append(all, docs...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].rank < all[j].rank })
	var out strings.Builder
	for _, m := range all {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", m.source, m.body)
	}
	_, err = io.WriteString(w, out.String())
	return err
}
