//! The Helm charts under deploy/helm, rendered without helm or a cluster: tools/chart-render
//! (Go text/template + sprig, like `helm template`) renders them for several value sets, and the
//! manifests are checked here: auth settings reach the API and the worker pods from the Secrets
//! the values name, the connector registers each replica's own pod address, the built-in Redis
//! never evicts, bad values fail to render, and every DSXCONNECT_*/DSXCONNECTOR_* name a chart
//! sets is one the code reads.

#[path = "common/deploy.rs"]
mod deploy;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use deploy::{known, repo, sources, variable_names};
use yaml_rust2::{Yaml, YamlLoader};

const SERVER: &str = "deploy/helm/dsx-connect";
const CONNECTOR: &str = "deploy/helm/filesystem-connector";
/// With release `dsx-connect`, the chart's full name is `dsx-connect` (helm's naming rule).
const SERVER_RELEASE: &str = "dsx-connect";
const CONNECTOR_RELEASE: &str = "fs";
const CONNECTOR_FULLNAME: &str = "fs-filesystem-connector";
const S3_CONNECTOR: &str = "deploy/helm/aws-s3-connector";
/// `render` installs every chart as release `fs`.
const S3_FULLNAME: &str = "fs-aws-s3-connector";

/// tools/chart-render, built once per test run with the Debian Go packages (GOPATH mode).
fn renderer() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let bin = tmp.join("chart-render");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg("tools/chart-render/main.go")
            .current_dir(repo())
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", tmp.join("go-build-cache"))
            .env("GOFLAGS", "")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `go` ({e}): the chart tests render the Helm charts with tools/chart-render, a Go \
                     program. scripts/test.sh installs golang-go, golang-github-masterminds-sprig-dev and \
                     golang-gopkg-yaml.v3-dev (apt-get install them to run this test alone)"
                )
            });
        assert!(
            out.status.success(),
            "building tools/chart-render failed (scripts/test.sh installs golang-go, \
             golang-github-masterminds-sprig-dev and golang-gopkg-yaml.v3-dev):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

struct Rendered {
    docs: Vec<Yaml>,
}

/// Render `chart` with `args` (helm-style flags); Err carries the renderer's stderr.
fn try_render(chart: &str, release: &str, args: &[&str]) -> Result<Rendered, String> {
    let out = Command::new(renderer())
        .args(args)
        .args(["--namespace", "scanning", release])
        .arg(repo().join(chart))
        .output()
        .expect("run chart-render");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("utf-8 manifests");
    assert!(text.starts_with("---\n# Source: "), "helm-style output:\n{text}");
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("manifests parse as YAML: {e}\n{text}"));
    let docs: Vec<Yaml> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert!(!docs.is_empty(), "{chart} rendered nothing");
    for doc in &docs {
        for field in [&doc["apiVersion"], &doc["kind"], &doc["metadata"]["name"]] {
            assert!(
                field.as_str().is_some_and(|s| !s.is_empty()),
                "every manifest has apiVersion, kind, metadata.name: {doc:?}"
            );
        }
    }
    Ok(Rendered { docs })
}

fn render(chart: &str, args: &[&str]) -> Rendered {
    let release = if chart == SERVER { SERVER_RELEASE } else { CONNECTOR_RELEASE };
    try_render(chart, release, args).unwrap_or_else(|e| panic!("{chart} {args:?} failed to render:\n{e}"))
}

fn render_err(chart: &str, args: &[&str]) -> String {
    let release = if chart == SERVER { SERVER_RELEASE } else { CONNECTOR_RELEASE };
    match try_render(chart, release, args) {
        Ok(_) => panic!("{chart} {args:?} rendered, but should have failed"),
        Err(e) => e,
    }
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Yaml> {
        self.docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Yaml> {
        self.all(kind).into_iter().find(|d| d["metadata"]["name"].as_str() == Some(name))
    }

    fn get(&self, kind: &str, name: &str) -> &Yaml {
        self.find(kind, name).unwrap_or_else(|| {
            let have: Vec<_> =
                self.docs.iter().map(|d| format!("{}/{}", s(&d["kind"]), s(&d["metadata"]["name"]))).collect();
            panic!("no {kind} {name}; rendered: {have:?}")
        })
    }
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_default()
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or_default()
}

fn container(workload: &Yaml) -> &Yaml {
    let containers = list(&workload["spec"]["template"]["spec"]["containers"]);
    assert_eq!(containers.len(), 1, "one container in {}", s(&workload["metadata"]["name"]));
    &containers[0]
}

/// Where an environment variable's value comes from.
#[derive(Debug, PartialEq)]
enum Source {
    Value(String),
    Secret { name: String, key: String },
    Field(String),
}

fn env(workload: &Yaml) -> Vec<(String, Source)> {
    list(&container(workload)["env"])
        .iter()
        .map(|e| {
            let from = &e["valueFrom"];
            let source = if !from["secretKeyRef"].is_badvalue() {
                Source::Secret {
                    name: s(&from["secretKeyRef"]["name"]).into(),
                    key: s(&from["secretKeyRef"]["key"]).into(),
                }
            } else if !from["fieldRef"].is_badvalue() {
                Source::Field(s(&from["fieldRef"]["fieldPath"]).into())
            } else {
                Source::Value(e["value"].as_str().unwrap_or_else(|| panic!("env values are strings: {e:?}")).into())
            };
            (s(&e["name"]).to_owned(), source)
        })
        .collect()
}

fn env_source(workload: &Yaml, name: &str) -> Option<Source> {
    env(workload).into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn env_value(workload: &Yaml, name: &str) -> Option<String> {
    match env_source(workload, name) {
        Some(Source::Value(v)) => Some(v),
        None => None,
        Some(other) => panic!("{name} is {other:?}, not a plain value"),
    }
}

fn has_env_like(workload: &Yaml, fragment: &str) -> bool {
    env(workload).iter().any(|(n, _)| n.contains(fragment))
}

/// The (Secret, key) whose content appears at `path` in the pod: the volume mounted at the
/// parent folder, projecting that key to that file. The mount must not use subPath (the kubelet
/// never refreshes subPath mounts, which would defeat restart-free rotation).
fn secret_file(workload: &Yaml, path: &str) -> Option<(String, String)> {
    let pod = &workload["spec"]["template"]["spec"];
    for mount in list(&container(workload)["volumeMounts"]) {
        let Some(rel) = path.strip_prefix(&format!("{}/", s(&mount["mountPath"]))) else { continue };
        assert!(mount["subPath"].is_badvalue(), "{path} is mounted with subPath: no refresh on rotation");
        let volume = list(&pod["volumes"]).iter().find(|v| v["name"] == mount["name"])?;
        let secret = &volume["secret"];
        if secret.is_badvalue() {
            return None;
        }
        let key = match secret["items"].as_vec() {
            Some(items) => s(&items.iter().find(|i| s(&i["path"]) == rel)?["key"]).to_owned(),
            None => rel.to_owned(),
        };
        return Some((s(&secret["secretName"]).to_owned(), key));
    }
    None
}

/// The Secret (name, key) behind a `*_FILE` variable.
fn file_var_secret(workload: &Yaml, var: &str) -> Option<(String, String)> {
    let path = env_value(workload, var)?;
    Some(secret_file(workload, &path).unwrap_or_else(|| panic!("{var}={path} is not a file from a Secret")))
}

fn pair(name: &str, key: &str) -> Option<(String, String)> {
    Some((name.to_owned(), key.to_owned()))
}

fn api(r: &Rendered) -> &Yaml {
    r.get("Deployment", "dsx-connect-api")
}

fn worker(r: &Rendered) -> &Yaml {
    r.get("Deployment", "dsx-connect-worker")
}

fn server_pods(r: &Rendered) -> [(&'static str, &Yaml); 2] {
    [("api", api(r)), ("worker", worker(r))]
}

fn values(chart: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join(chart).join("values.yaml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn example(file: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join("examples/secrets").join(file)).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

#[test]
fn server_defaults_render_with_auth_on_and_the_example_secrets() {
    let r = render(SERVER, &[]);
    for (role, pod) in server_pods(&r) {
        assert_eq!(env_value(pod, "DSXCONNECT_ROLE").as_deref(), Some(role));
        assert_eq!(env_value(pod, "DSXCONNECT_LISTEN").as_deref(), Some("0.0.0.0:8586"));
        assert_eq!(s(&container(pod)["args"][0]), "serve");
        // Production posture (docs/authentication.md, "Helm"): Auth on, break-glass off, token from the example Secret.
        assert_eq!(env_value(pod, "DSXCONNECT_AUTH__ENABLED").as_deref(), Some("true"), "{role}");
        assert_eq!(env_value(pod, "DSXCONNECT_AUTH__BREAK_GLASS").as_deref(), Some("false"), "{role}");
        assert_eq!(
            file_var_secret(pod, "DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILE"),
            pair("dsx-connect-enrollment", "DSXCONNECT_ENROLLMENT_TOKEN"),
            "{role}"
        );
        assert!(env_source(pod, "DSXCONNECT_AUTH__ENROLLMENT_TOKEN").is_none(), "no token in plain env");
        assert_eq!(pod["spec"]["replicas"].as_i64(), Some(2), "{role}");
        // Hardening of every pod.
        let sc = &container(pod)["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{role}");
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{role}");
        assert_eq!(pod["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        assert!(container(pod)["resources"]["limits"]["memory"].as_str().is_some(), "{role} has resource limits");
        assert_eq!(s(&container(pod)["livenessProbe"]["httpGet"]["path"]), "/dsx-connect/api/v1/healthz");
        assert_eq!(s(&container(pod)["readinessProbe"]["httpGet"]["path"]), "/dsx-connect/api/v1/readyz");
        assert_eq!(env_value(pod, "DSXCONNECT_SCANNER__KIND").as_deref(), Some("builtin"));
        assert_eq!(env_value(pod, "DSXCONNECT_SCANNER__MAX_FILE_SIZE_BYTES").as_deref(), Some("2147483648"));
    }
    // The operator token reaches the API only; workers serve no operator routes.
    assert_eq!(
        file_var_secret(api(&r), "DSXCONNECT_AUTH__ADMIN_TOKENS_FILE"),
        pair("dsx-connect-operator", "DSXCONNECT_OPERATOR_TOKEN")
    );
    assert!(env_source(worker(&r), "DSXCONNECT_AUTH__ADMIN_TOKENS_FILE").is_none());
    // The Service selects the API pods only, on the API port.
    let svc = r.get("Service", "dsx-connect");
    assert_eq!(s(&svc["spec"]["selector"]["app.kubernetes.io/component"]), "api");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_i64(), Some(8586));
    assert!(
        r.all("HorizontalPodAutoscaler").is_empty() && r.all("Ingress").is_empty(),
        "optional parts off by default"
    );
    assert!(r.find("ServiceAccount", "dsx-connect").is_some());
    // The example Secrets are exactly what the defaults reference.
    for (file, pod, var) in [
        ("auth-enrollment-secret.yaml", worker(&r), "DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILE"),
        ("auth-operator-secret.yaml", api(&r), "DSXCONNECT_AUTH__ADMIN_TOKENS_FILE"),
    ] {
        let secret = example(file);
        assert_eq!(s(&secret["kind"]), "Secret");
        let keys: Vec<_> = secret["stringData"].as_hash().unwrap().keys().map(|k| s(k).to_owned()).collect();
        assert_eq!(keys.len(), 1, "{file}");
        assert_eq!(file_var_secret(pod, var), pair(s(&secret["metadata"]["name"]), &keys[0]), "{file}");
    }
    let notes = Command::new(renderer()).args(["--notes", SERVER_RELEASE]).arg(repo().join(SERVER)).output().unwrap();
    let notes = String::from_utf8_lossy(&notes.stdout);
    assert!(notes.contains("Authentication is ON") && notes.contains("dsx-connect-enrollment"), "{notes}");
}

#[test]
fn auth_values_reach_the_api_and_the_worker_pods() {
    let set = "dsx-connect-api.auth.enabled=true,dsx-connect-api.auth.enrollment.secretName=X,\
               dsx-connect-api.auth.enrollment.key=Y,dsx-connect-api.auth.enrollment.extraTokens=a\\,b";
    let secret_key = "dsx-connect-api.auth.secretKey.secretName=at-rest,dsx-connect-api.auth.secretKey.key=K";
    for break_glass in [None, Some("true"), Some("false")] {
        let mut args = vec!["--set", set, "--set", secret_key];
        let flag = break_glass.map(|b| format!("dsx-connect-api.auth.breakGlass={b}"));
        if let Some(f) = &flag {
            args.extend(["--set", f]);
        }
        let r = render(SERVER, &args);
        // Extra tokens: a Secret the chart renders, one token per line, mounted as a token file.
        let extra = r.get("Secret", "dsx-connect-enrollment-extra");
        assert_eq!(s(&extra["stringData"]["tokens"]).lines().collect::<Vec<_>>(), ["a", "b"]);
        for (role, pod) in server_pods(&r) {
            assert_eq!(env_value(pod, "DSXCONNECT_AUTH__ENABLED").as_deref(), Some("true"), "{role}");
            assert_eq!(file_var_secret(pod, "DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILE"), pair("X", "Y"), "{role}");
            assert_eq!(
                file_var_secret(pod, "DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILES"),
                pair("dsx-connect-enrollment-extra", "tokens"),
                "{role}"
            );
            assert_eq!(file_var_secret(pod, "DSXCONNECT_AUTH__SECRET_KEY_FILE"), pair("at-rest", "K"), "{role}");
            assert_eq!(
                env_value(pod, "DSXCONNECT_AUTH__BREAK_GLASS").as_deref(),
                Some(break_glass.unwrap_or("false")),
                "{role}: break-glass defaults off and follows the value"
            );
        }
    }
}

#[test]
fn auth_disabled_wires_no_tokens() {
    let r =
        render(SERVER, &["--set", "dsx-connect-api.auth.enabled=false,dsx-connect-api.auth.enrollment.extraTokens=a"]);
    for (role, pod) in server_pods(&r) {
        assert_eq!(env_value(pod, "DSXCONNECT_AUTH__ENABLED").as_deref(), Some("false"), "{role}");
        assert!(!has_env_like(pod, "ENROLLMENT") && !has_env_like(pod, "ADMIN_TOKEN"), "{role}: no token wiring");
        let secrets: Vec<_> = list(&pod["spec"]["template"]["spec"]["volumes"])
            .iter()
            .filter(|v| !v["secret"].is_badvalue())
            .map(|v| s(&v["name"]).to_owned())
            .collect();
        assert!(secrets.is_empty(), "{role} mounts no token Secret: {secrets:?}");
    }
    assert!(r.all("Secret").is_empty());
}

#[test]
fn auth_on_without_an_enrollment_secret_refuses_to_render() {
    for args in [
        vec!["--set", "dsx-connect-api.auth.enrollment.secretName="],
        vec!["--set", "dsx-connect-api.auth.enabled=true,dsx-connect-api.auth.enrollment.secretName=null"],
        vec![
            "--set",
            "dsx-connect-api.auth.enrollment.secretName=",
            "--set",
            "dsx-connect-api.auth.enrollment.extraTokens=t",
        ],
    ] {
        let err = render_err(SERVER, &args);
        assert!(
            err.contains("dsx-connect-api.auth.enabled=true needs the enrollment token Secret")
                && err.contains("dsx-connect-api.auth.enrollment.secretName"),
            "{args:?}: {err}"
        );
    }
    let err = render_err(CONNECTOR, &["--set", "auth_dsxconnect.enrollmentSecretName="]);
    assert!(err.contains("auth_dsxconnect.enrollmentSecretName"), "{err}");
}

#[test]
fn built_in_redis_persists_and_never_evicts() {
    let r = render(SERVER, &[]);
    let redis = r.get("StatefulSet", "dsx-connect-redis");
    let args: Vec<&str> = list(&container(redis)["args"]).iter().map(s).collect();
    let flag = |name: &str| args.iter().position(|a| *a == name).map(|i| args[i + 1]);
    assert_eq!(flag("--appendonly"), Some("yes"), "{args:?}");
    assert_eq!(flag("--maxmemory-policy"), Some("noeviction"), "{args:?}");
    let claim = &list(&redis["spec"]["volumeClaimTemplates"])[0];
    assert_eq!(s(&claim["metadata"]["name"]), "data");
    assert_eq!(s(&list(&container(redis)["volumeMounts"])[0]["mountPath"]), "/data");
    assert_eq!(container(redis)["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    let svc = r.get("Service", "dsx-connect-redis");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_i64(), Some(6379));
    for (role, pod) in server_pods(&r) {
        assert_eq!(
            env_value(pod, "DSXCONNECT_REDIS_URL").as_deref(),
            Some("redis://dsx-connect-redis:6379/0"),
            "{role}"
        );
    }
    let policy = r.get("NetworkPolicy", "dsx-connect-redis");
    assert_eq!(s(&policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]), "redis");
}

#[test]
fn external_redis_replaces_the_built_in_one() {
    let r = render(SERVER, &["--set", "redis.external.url=redis://redis.example:6379/2"]);
    assert!(r.all("StatefulSet").is_empty(), "no built-in Redis");
    assert!(r.find("Service", "dsx-connect-redis").is_none() && r.all("NetworkPolicy").is_empty());
    for (role, pod) in server_pods(&r) {
        assert_eq!(env_value(pod, "DSXCONNECT_REDIS_URL").as_deref(), Some("redis://redis.example:6379/2"), "{role}");
    }
    let r = render(SERVER, &["--set", "redis.external.existingSecret=redis-conn"]);
    assert!(r.all("StatefulSet").is_empty());
    for (role, pod) in server_pods(&r) {
        assert_eq!(
            env_source(pod, "DSXCONNECT_REDIS_URL"),
            Some(Source::Secret { name: "redis-conn".into(), key: "DSXCONNECT_REDIS_URL".into() }),
            "{role}"
        );
    }
    let err = render_err(SERVER, &["--set", "redis.external.url=redis://a:6379,redis.external.existingSecret=s"]);
    assert!(err.contains("not both"), "{err}");
    let err = render_err(SERVER, &["--set", "redis.external.url=http://not-redis"]);
    assert!(err.contains("redis.external.url"), "the schema checks the URL scheme: {err}");
}

#[test]
fn external_scanner_takes_its_token_from_a_secret() {
    let r = render(
        SERVER,
        &[
            "--set",
            "scanner.kind=dsxa,scanner.dsxa.baseUrl=http://dsxa:5000,scanner.dsxa.authToken.secretName=dsxa-token",
        ],
    );
    for (role, pod) in server_pods(&r) {
        assert_eq!(env_value(pod, "DSXCONNECT_SCANNER__KIND").as_deref(), Some("dsxa"), "{role}");
        assert_eq!(env_value(pod, "DSXCONNECT_SCANNER__BASE_URL").as_deref(), Some("http://dsxa:5000"), "{role}");
        assert_eq!(env_value(pod, "DSXCONNECT_SCANNER__VERIFY_TLS").as_deref(), Some("true"), "{role}");
        assert_eq!(
            env_source(pod, "DSXCONNECT_SCANNER__AUTH_TOKEN"),
            Some(Source::Secret { name: "dsxa-token".into(), key: "DSXCONNECT_SCANNER__AUTH_TOKEN".into() })
        );
    }
    let err = render_err(SERVER, &["--set", "scanner.kind=dsxa"]);
    assert!(err.contains("scanner.dsxa.baseUrl"), "{err}");
    let err = render_err(SERVER, &["--set", "scanner.kind=clamav"]);
    assert!(err.contains("scanner.kind"), "{err}");
}

#[test]
fn autoscaling_ingress_and_replicas() {
    let r = render(
        SERVER,
        &[
            "--set",
            "api.autoscaling.enabled=true,api.autoscaling.maxReplicas=9,worker.replicas=5",
            "--set",
            "ingress.enabled=true,ingress.host=scan.example.org,ingress.tls.secretName=scan-tls",
        ],
    );
    let hpa = r.get("HorizontalPodAutoscaler", "dsx-connect-api");
    assert_eq!(s(&hpa["spec"]["scaleTargetRef"]["name"]), "dsx-connect-api");
    assert_eq!(hpa["spec"]["maxReplicas"].as_i64(), Some(9));
    assert!(api(&r)["spec"]["replicas"].is_badvalue(), "the HPA owns the API's replica count");
    assert!(r.find("HorizontalPodAutoscaler", "dsx-connect-worker").is_none());
    assert_eq!(worker(&r)["spec"]["replicas"].as_i64(), Some(5));
    let ingress = r.get("Ingress", "dsx-connect");
    assert_eq!(s(&ingress["spec"]["tls"][0]["secretName"]), "scan-tls");
    assert_eq!(s(&ingress["spec"]["tls"][0]["hosts"][0]), "scan.example.org");
    assert_eq!(s(&ingress["spec"]["rules"][0]["host"]), "scan.example.org");
    assert_eq!(s(&ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]), "dsx-connect");
    let r = render(SERVER, &["--set", "worker.autoscaling.enabled=true"]);
    let hpa = r.get("HorizontalPodAutoscaler", "dsx-connect-worker");
    assert_eq!(s(&hpa["spec"]["scaleTargetRef"]["name"]), "dsx-connect-worker");
    assert!(worker(&r)["spec"]["replicas"].is_badvalue());
}

fn connector(r: &Rendered) -> &Yaml {
    r.get("StatefulSet", CONNECTOR_FULLNAME)
}

#[test]
fn connector_replicas_register_their_own_pod_address() {
    let r = render(CONNECTOR, &["--set", "replicas=3"]);
    let sts = connector(&r);
    assert_eq!(sts["spec"]["replicas"].as_i64(), Some(3));
    let vars = env(sts);
    let index = |name: &str| vars.iter().position(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} is set"));
    assert_eq!(vars[index("POD_IP")].1, Source::Field("status.podIP".into()));
    assert!(
        index("POD_IP") < index("DSXCONNECTOR_CONNECTOR_URL"),
        "Kubernetes expands $(POD_IP) only if defined before"
    );
    assert_eq!(env_value(sts, "DSXCONNECTOR_CONNECTOR_URL").as_deref(), Some("http://$(POD_IP):8620"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_LISTEN").as_deref(), Some("0.0.0.0:8620"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_NAME").as_deref(), Some("filesystem-connector"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_DSX_CONNECT_URL").as_deref(), Some("http://dsx-connect:8586"));
    // The uuid persists per replica: DATA_DIR is a volumeClaimTemplate, not a shared volume.
    let data_dir = env_value(sts, "DSXCONNECTOR_DATA_DIR").unwrap();
    let mount = list(&container(sts)["volumeMounts"]).iter().find(|m| s(&m["mountPath"]) == data_dir).cloned();
    let mount = mount.unwrap_or_else(|| panic!("{data_dir} is mounted"));
    let templates = list(&sts["spec"]["volumeClaimTemplates"]);
    assert!(templates.iter().any(|t| t["metadata"]["name"] == mount["name"]), "DATA_DIR is a per-replica claim");
    let headless = r.get("Service", &format!("{CONNECTOR_FULLNAME}-headless"));
    assert_eq!(s(&headless["spec"]["clusterIP"]), "None");
    assert_eq!(s(&sts["spec"]["serviceName"]), s(&headless["metadata"]["name"]));
    assert_eq!(s(&container(sts)["livenessProbe"]["httpGet"]["path"]), "/filesystem-connector/healthz");
    assert_eq!(s(&container(sts)["readinessProbe"]["httpGet"]["path"]), "/filesystem-connector/readyz");
    assert_eq!(container(sts)["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
}

#[test]
fn connector_auth_values_wire_the_shared_enrollment_secret() {
    // Defaults: auth on, the token from the example Secret dsx-connect also reads.
    let r = render(CONNECTOR, &[]);
    let sts = connector(&r);
    assert_eq!(env_value(sts, "DSXCONNECTOR_AUTH__ENABLED").as_deref(), Some("true"));
    let defaults = values(CONNECTOR);
    assert_eq!(s(&defaults["auth_dsxconnect"]["enrollmentKey"]), "DSXCONNECT_ENROLLMENT_TOKEN");
    let example = example("auth-enrollment-secret.yaml");
    let example_key = example["stringData"].as_hash().unwrap().keys().next().map(|k| s(k).to_owned()).unwrap();
    assert_eq!(
        file_var_secret(sts, "DSXCONNECT_ENROLLMENT_TOKEN_FILE"),
        pair(s(&example["metadata"]["name"]), &example_key),
        "the connector's default Secret is the example"
    );
    let server = values(SERVER);
    let enrollment = &server["dsx-connect-api"]["auth"]["enrollment"];
    assert_eq!(
        (s(&enrollment["secretName"]), s(&enrollment["key"])),
        (s(&defaults["auth_dsxconnect"]["enrollmentSecretName"]), s(&defaults["auth_dsxconnect"]["enrollmentKey"])),
        "both charts default to one Secret and key"
    );

    let r = render(
        CONNECTOR,
        &["--set", "auth_dsxconnect.enabled=true,auth_dsxconnect.enrollmentSecretName=enroll,auth_dsxconnect.enrollmentKey=TOKEN"],
    );
    let sts = connector(&r);
    assert_eq!(env_value(sts, "DSXCONNECTOR_AUTH__ENABLED").as_deref(), Some("true"));
    assert_eq!(file_var_secret(sts, "DSXCONNECT_ENROLLMENT_TOKEN_FILE"), pair("enroll", "TOKEN"));

    let r = render(CONNECTOR, &["--set", "auth_dsxconnect.enabled=false"]);
    let sts = connector(&r);
    assert_eq!(env_value(sts, "DSXCONNECTOR_AUTH__ENABLED").as_deref(), Some("false"));
    assert!(!has_env_like(sts, "ENROLLMENT_TOKEN"));
}

#[test]
fn connector_volumes_asset_and_quarantine() {
    // Defaults: a PVC the chart creates (kept on uninstall), quarantine inside the asset.
    let r = render(CONNECTOR, &[]);
    let sts = connector(&r);
    let pvc = r.get("PersistentVolumeClaim", &format!("{CONNECTOR_FULLNAME}-scan"));
    assert_eq!(s(&pvc["metadata"]["annotations"]["helm.sh/resource-policy"]), "keep");
    assert_eq!(env_value(sts, "DSXCONNECTOR_ASSET").as_deref(), Some("/mnt/scan"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_ITEM_ACTION").as_deref(), Some("move"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO").as_deref(), Some("dsxconnect-quarantine"));

    // A values file (-f) merged over the defaults, plus --set on top.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(
        &file,
        "scanVolume:\n  existingClaim: shared-files\n  mountPath: /srv/files\nasset: /srv/files/inbox\n\
         filter: \"*.pdf,*.docx\"\nitemAction: movetag\nquarantineVolume:\n  enabled: true\n  hostPath: /var/quarantine\n",
    )
    .unwrap();
    let r = render(CONNECTOR, &["-f", file.to_str().unwrap(), "--set", "monitor.enabled=true"]);
    let sts = connector(&r);
    assert!(r.all("PersistentVolumeClaim").is_empty(), "nothing to create");
    let volumes = list(&sts["spec"]["template"]["spec"]["volumes"]);
    let volume = |name: &str| volumes.iter().find(|v| s(&v["name"]) == name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(s(&volume("scan")["persistentVolumeClaim"]["claimName"]), "shared-files");
    assert_eq!(s(&volume("quarantine")["hostPath"]["path"]), "/var/quarantine");
    assert_eq!(env_value(sts, "DSXCONNECTOR_ASSET").as_deref(), Some("/srv/files/inbox"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_FILTER").as_deref(), Some("*.pdf,*.docx"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_ITEM_ACTION").as_deref(), Some("movetag"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO").as_deref(), Some("/mnt/quarantine"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_MONITOR").as_deref(), Some("true"));
    let mounts = list(&container(sts)["volumeMounts"]);
    assert!(mounts.iter().any(|m| s(&m["name"]) == "scan" && s(&m["mountPath"]) == "/srv/files"));
    assert!(mounts.iter().any(|m| s(&m["name"]) == "quarantine" && s(&m["mountPath"]) == "/mnt/quarantine"));

    let err = render_err(CONNECTOR, &["--set", "itemAction=shred"]);
    assert!(err.contains("itemAction"), "{err}");
}

#[test]
fn the_schemas_reject_malformed_values() {
    for (chart, set, named) in [
        (SERVER, "api.replicas=two", "api.replicas"),
        (SERVER, "dsx-connect-api.auth.breakGlass=sometimes", "dsx-connect-api.auth.breakGlass"),
        (SERVER, "dsx-connect-api.auth.enrollmnet.secretName=x", "enrollmnet"),
        (SERVER, "replicas=2", "replicas"),
        // Exactly the transports the server accepts.
        (SERVER, "syslog.transport=ssl", "syslog.transport"),
        (SERVER, "tls.enable=true", "enable"),
        (CONNECTOR, "tls.enabled=yes", "tls.enabled"),
        (CONNECTOR, "auth_dsxconnect.enabled=yes", "auth_dsxconnect.enabled"),
        (CONNECTOR, "scanVolume.mountPath=relative", "scanVolume.mountPath"),
        (S3_CONNECTOR, "asset=Not_A_Bucket", "asset"),
        (S3_CONNECTOR, "s3.endpointUrl=minio:9000", "s3.endpointUrl"),
        (S3_CONNECTOR, "auth_dsxconnect.enabled=yes", "auth_dsxconnect.enabled"),
        (S3_CONNECTOR, "asset=bkt,tls.enabled=yes", "tls.enabled"),
        (S3_CONNECTOR, "asset=bkt,tls.secretNam=s3-tls", "secretNam"),
        (S3_CONNECTOR, "asset=bkt,tls.requireClientCert=1", "tls.requireClientCert"),
    ] {
        let err = render_err(chart, &["--set", set]);
        assert!(err.contains("schema") && err.contains(named), "{set}: {err}");
    }
}

#[test]
fn s3_connector_chart_wires_bucket_events_auth_and_irsa() {
    // The asset is required: no default bucket.
    let err = render_err(S3_CONNECTOR, &[]);
    assert!(err.contains("asset"), "{err}");
    let err = render_err(S3_CONNECTOR, &["--set", "asset=bkt,monitor.enabled=true"]);
    assert!(err.contains("sqsQueueUrl"), "{err}");

    let r = render(
        S3_CONNECTOR,
        &[
            "--set",
            "asset=bkt/in,replicas=2,monitor.enabled=true,s3.sqsQueueUrl=https://sqs.us-east-1.amazonaws.com/1/q",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/scan",
        ],
    );
    let sts = r.get("StatefulSet", S3_FULLNAME);
    assert_eq!(sts["spec"]["replicas"].as_i64(), Some(2));
    assert_eq!(env_value(sts, "DSXCONNECTOR_NAME").as_deref(), Some("aws-s3-connector"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_LISTEN").as_deref(), Some("0.0.0.0:8600"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_CONNECTOR_URL").as_deref(), Some("http://$(POD_IP):8600"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_ASSET").as_deref(), Some("bkt/in"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_ITEM_ACTION").as_deref(), Some("move"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO").as_deref(), Some("dsxconnect-quarantine"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_MONITOR").as_deref(), Some("true"));
    assert_eq!(
        env_value(sts, "DSXCONNECTOR_S3_SQS_QUEUE_URL").as_deref(),
        Some("https://sqs.us-east-1.amazonaws.com/1/q")
    );
    assert!(!has_env_like(sts, "AWS_SECRET_ACCESS_KEY"), "no static keys unless a Secret is named");
    assert_eq!(s(&container(sts)["readinessProbe"]["httpGet"]["path"]), "/aws-s3-connector/readyz");
    assert_eq!(container(sts)["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    // The same auth block as the filesystem chart, with the 1.x aws-s3 chart's Secret name.
    assert_eq!(env_value(sts, "DSXCONNECTOR_AUTH__ENABLED").as_deref(), Some("true"));
    assert_eq!(
        file_var_secret(sts, "DSXCONNECT_ENROLLMENT_TOKEN_FILE"),
        pair("aws-s3-connector-env", "DSXCONNECT_ENROLLMENT_TOKEN")
    );
    let sa = r.get("ServiceAccount", S3_FULLNAME);
    assert_eq!(s(&sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]), "arn:aws:iam::1:role/scan");
    assert_eq!(s(&sts["spec"]["template"]["spec"]["serviceAccountName"]), S3_FULLNAME);

    let r = render(
        S3_CONNECTOR,
        &[
            "--set",
            "asset=bkt,s3.endpointUrl=https://minio:9000,s3.caBundleSecretName=minio-ca,aws.credentialsSecretName=keys",
            "--set",
            "auth_dsxconnect.enabled=true,auth_dsxconnect.enrollmentSecretName=enroll,auth_dsxconnect.enrollmentKey=TOKEN",
        ],
    );
    let sts = r.get("StatefulSet", S3_FULLNAME);
    assert_eq!(env_value(sts, "DSXCONNECTOR_S3_ENDPOINT_URL").as_deref(), Some("https://minio:9000"));
    assert_eq!(
        file_var_secret(sts, "DSXCONNECTOR_S3_ENDPOINT_VERIFY"),
        pair("minio-ca", "ca.pem"),
        "the CA bundle comes from the named Secret"
    );
    assert_eq!(
        env_source(sts, "AWS_SECRET_ACCESS_KEY"),
        Some(Source::Secret { name: "keys".into(), key: "AWS_SECRET_ACCESS_KEY".into() })
    );
    assert_eq!(file_var_secret(sts, "DSXCONNECT_ENROLLMENT_TOKEN_FILE"), pair("enroll", "TOKEN"));
    let r = render(S3_CONNECTOR, &["--set", "asset=bkt,auth_dsxconnect.enabled=false"]);
    assert!(!has_env_like(r.get("StatefulSet", S3_FULLNAME), "ENROLLMENT_TOKEN"));
}

/// Every DSXCONNECT_*/DSXCONNECTOR_* name in any rendered manifest (env names, Secret keys,
/// values) is read by the code, for value sets that switch every optional part on.
#[test]
fn charts_only_set_variables_the_code_reads() {
    let sources = sources();
    let everything = [
        "api.autoscaling.enabled=true,worker.autoscaling.enabled=true,ingress.enabled=true",
        "dsx-connect-api.auth.enrollment.extraTokens=a\\,b,dsx-connect-api.auth.breakGlass=true",
        "dsx-connect-api.auth.secretKey.secretName=k,redis.external.existingSecret=r",
        "syslog.enabled=true,syslog.host=logs.example,syslog.transport=tls",
        "syslog.tls.secretName=syslog-tls,syslog.tls.clientCert=true,syslog.tls.insecure=true",
        "tls.enabled=true,tls.secretName=srv-tls,tls.requireClientCert=true,tls.clientCertToConnectors=true",
    ];
    let mut sets: Vec<(&str, Vec<&str>)> = vec![(SERVER, vec![]), (CONNECTOR, vec![])];
    sets.push((SERVER, everything.iter().flat_map(|s| ["--set", *s]).collect()));
    sets.push((
        SERVER,
        vec![
            "--set",
            "scanner.kind=dsxa,scanner.dsxa.baseUrl=https://d:5000,scanner.dsxa.authToken.secretName=t,scanner.dsxa.caBundle.secretName=ca",
            "--set",
            "redis.external.url=redis://r:6379/0",
        ],
    ));
    sets.push((
        SERVER,
        vec!["--set", "scanner.blocklist={275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f}"],
    ));
    sets.push((
        CONNECTOR,
        vec![
            "--set",
            "monitor.enabled=true,monitor.forcePolling=true,displayName=Files,assetDisplayName=share",
            "--set",
            "quarantineVolume.enabled=true,dataVolume.persistent=false",
            "--set",
            "tls.enabled=true,tls.secretName=c-tls,tls.clientCert=true,tls.requireClientCert=true",
        ],
    ));
    sets.push((S3_CONNECTOR, vec!["--set", "asset=bkt"]));
    sets.push((
        S3_CONNECTOR,
        vec![
            "--set",
            "asset=bkt/in,monitor.enabled=true,s3.sqsQueueUrl=https://sqs.eu-west-1.amazonaws.com/1/q",
            "--set",
            "s3.endpointUrl=https://minio:9000,s3.caBundleSecretName=ca,s3.maxObjectSizeBytes=5,aws.region=eu-west-1,aws.credentialsSecretName=k",
            "--set",
            "tls.enabled=true,tls.secretName=s3-tls,tls.clientCert=true,tls.requireClientCert=true",
        ],
    ));
    let mut checked = 0;
    for (chart, args) in &sets {
        let r = render(chart, args);
        let mut strings = Vec::new();
        for doc in &r.docs {
            collect_strings(doc, &mut strings);
        }
        for name in strings.iter().flat_map(|t| variable_names(t)) {
            assert!(known(&sources, &name), "{chart} {args:?} sets {name}, which no code reads");
            checked += 1;
        }
    }
    assert!(checked > 50, "the scan found the variables ({checked})");
    // The charts' and examples' own text (comments, values, NOTES) names real variables only.
    let mut stack = vec![repo().join("deploy/helm"), repo().join("examples/secrets")];
    while let Some(dir) = stack.pop() {
        for path in std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()) {
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            for name in variable_names(&std::fs::read_to_string(&path).unwrap()) {
                assert!(known(&sources, &name), "{} names {name}, which no code reads", path.display());
            }
        }
    }
}

fn collect_strings(y: &Yaml, out: &mut Vec<String>) {
    match y {
        Yaml::String(t) => out.push(t.clone()),
        Yaml::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Yaml::Hash(map) => {
            for (k, v) in map {
                collect_strings(k, out);
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

fn mount<'a>(workload: &'a Yaml, name: &str) -> &'a Yaml {
    list(&container(workload)["volumeMounts"])
        .iter()
        .find(|m| s(&m["name"]) == name)
        .unwrap_or_else(|| panic!("no volume mount {name}"))
}

fn volume<'a>(workload: &'a Yaml, name: &str) -> &'a Yaml {
    list(&workload["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| s(&v["name"]) == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// HTTPS from a cert-manager style Secret: mounted read-only as a whole (so renewals reach the
/// pod), the server and its clients pointed at tls.crt/tls.key/ca.crt, probes on HTTPS.
#[test]
fn tls_from_a_secret_reaches_the_server_the_workers_and_the_connector() {
    let r = render(
        SERVER,
        &[
            "--set",
            "tls.enabled=true,tls.secretName=dsx-tls,tls.requireClientCert=true,tls.clientCertToConnectors=true",
        ],
    );
    for pod in [api(&r), worker(&r)] {
        assert_eq!(env_value(pod, "DSXCONNECT_USE_TLS").as_deref(), Some("true"));
        assert_eq!(env_value(pod, "DSXCONNECT_TLS_CERTFILE").as_deref(), Some("/etc/dsx-connect/tls/tls.crt"));
        assert_eq!(env_value(pod, "DSXCONNECT_TLS_KEYFILE").as_deref(), Some("/etc/dsx-connect/tls/tls.key"));
        assert_eq!(env_value(pod, "DSXCONNECT_TLS_CLIENT_CA").as_deref(), Some("/etc/dsx-connect/tls/ca.crt"));
        assert_eq!(env_value(pod, "DSXCONNECT_CONNECTORS__CA_BUNDLE").as_deref(), Some("/etc/dsx-connect/tls/ca.crt"));
        assert_eq!(
            env_value(pod, "DSXCONNECT_CONNECTORS__TLS_CLIENT_CERTFILE").as_deref(),
            Some("/etc/dsx-connect/tls/tls.crt")
        );
        let m = mount(pod, "tls");
        assert_eq!((s(&m["mountPath"]), m["readOnly"].as_bool()), ("/etc/dsx-connect/tls", Some(true)));
        assert!(m["subPath"].is_badvalue(), "subPath mounts are not refreshed by the kubelet");
        assert_eq!(s(&volume(pod, "tls")["secret"]["secretName"]), "dsx-tls");
        let c = container(pod);
        assert_eq!(s(&c["livenessProbe"]["httpGet"]["scheme"]), "HTTPS");
        assert_eq!(s(&c["readinessProbe"]["httpGet"]["scheme"]), "HTTPS");
    }
    // Off by default: plain HTTP probes, no TLS variables.
    let plain = render(SERVER, &[]);
    assert!(!has_env_like(api(&plain), "TLS_"), "TLS variables without tls.enabled");
    assert!(container(api(&plain))["livenessProbe"]["httpGet"]["scheme"].is_badvalue());
    let err = render_err(SERVER, &["--set", "tls.enabled=true"]);
    assert!(err.contains("tls.secretName"), "{err}");

    // The scanner's CA and syslog over TLS from their own Secrets.
    let r = render(
        SERVER,
        &[
            "--set",
            "scanner.kind=dsxa,scanner.dsxa.baseUrl=https://dsxa:5000,scanner.dsxa.caBundle.secretName=dsxa-ca",
            "--set",
            "syslog.enabled=true,syslog.host=logs,syslog.transport=tls,syslog.tls.secretName=syslog-tls",
        ],
    );
    let pod = worker(&r);
    assert_eq!(env_value(pod, "DSXCONNECT_SCANNER__CA_BUNDLE").as_deref(), Some("/etc/dsx-connect/scanner-ca/ca.crt"));
    assert_eq!(s(&volume(pod, "scanner-ca")["secret"]["secretName"]), "dsxa-ca");
    assert_eq!(env_value(pod, "DSXCONNECT_SYSLOG__TRANSPORT").as_deref(), Some("tls"));
    assert_eq!(env_value(pod, "DSXCONNECT_SYSLOG__TLS_CA_FILE").as_deref(), Some("/etc/dsx-connect/syslog-tls/ca.crt"));
    assert_eq!(env_value(pod, "DSXCONNECT_SYSLOG__TLS_INSECURE").as_deref(), Some("false"));
    assert_eq!(mount(pod, "syslog-tls")["readOnly"].as_bool(), Some(true));

    let r = render(CONNECTOR, &["--set", "tls.enabled=true,tls.secretName=fs-tls,tls.clientCert=true"]);
    let sts = r.get("StatefulSet", CONNECTOR_FULLNAME);
    assert_eq!(
        env_value(sts, "DSXCONNECTOR_CONNECTOR_URL").as_deref(),
        Some("https://$(POD_NAME).fs-filesystem-connector-headless.scanning.svc:8620"),
        "each replica registers a name its certificate can cover"
    );
    assert_eq!(env_source(sts, "POD_NAME"), Some(Source::Field("metadata.name".into())));
    assert_eq!(env_value(sts, "DSXCONNECTOR_USE_TLS").as_deref(), Some("true"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_CA_BUNDLE").as_deref(), Some("/etc/connector/tls/ca.crt"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_TLS_CLIENT_CERTFILE").as_deref(), Some("/etc/connector/tls/tls.crt"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_TLS_CLIENT_CA"), None, "mutual TLS towards the connector is opt-in");
    assert_eq!(mount(sts, "tls")["readOnly"].as_bool(), Some(true));
    assert_eq!(s(&container(sts)["readinessProbe"]["httpGet"]["scheme"]), "HTTPS");
    let err = render_err(CONNECTOR, &["--set", "tls.enabled=true"]);
    assert!(err.contains("tls.secretName"), "{err}");
}

/// The S3 connector chart's TLS block is the filesystem chart's: every TLS variable names a file
/// of the one mounted Secret (whole, read-only, no subPath), probes on HTTPS, each replica
/// registered under the headless Service, and the S3 endpoint's CA still its own Secret.
#[test]
fn s3_connector_tls_from_a_secret() {
    let r = render(
        S3_CONNECTOR,
        &[
            "--set",
            "asset=bkt,tls.enabled=true,tls.secretName=s3-tls,tls.clientCert=true,tls.requireClientCert=true",
            "--set",
            "s3.endpointUrl=https://minio:9000,s3.caBundleSecretName=minio-ca",
        ],
    );
    let sts = r.get("StatefulSet", S3_FULLNAME);
    let headless = format!("{S3_FULLNAME}-headless");
    assert_eq!(s(&sts["spec"]["serviceName"]), headless);
    assert_eq!(r.get("Service", &headless)["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        env_value(sts, "DSXCONNECTOR_CONNECTOR_URL").as_deref(),
        Some("https://$(POD_NAME).fs-aws-s3-connector-headless.scanning.svc:8600"),
        "each replica registers a name its certificate can cover"
    );
    assert_eq!(env_source(sts, "POD_NAME"), Some(Source::Field("metadata.name".into())));
    let names: Vec<String> = env(sts).into_iter().map(|(n, _)| n).collect();
    let at = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("no {n}"));
    assert!(at("POD_NAME") < at("DSXCONNECTOR_CONNECTOR_URL"), "$(POD_NAME) expands only if defined before");
    assert_eq!(env_value(sts, "DSXCONNECTOR_USE_TLS").as_deref(), Some("true"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_VERIFY_TLS").as_deref(), Some("true"));
    for (var, key) in [
        ("DSXCONNECTOR_TLS_CERTFILE", "tls.crt"),
        ("DSXCONNECTOR_TLS_KEYFILE", "tls.key"),
        ("DSXCONNECTOR_CA_BUNDLE", "ca.crt"),
        ("DSXCONNECTOR_TLS_CLIENT_CERTFILE", "tls.crt"),
        ("DSXCONNECTOR_TLS_CLIENT_KEYFILE", "tls.key"),
        ("DSXCONNECTOR_TLS_CLIENT_CA", "ca.crt"),
    ] {
        assert_eq!(file_var_secret(sts, var), pair("s3-tls", key), "{var}");
    }
    let m = mount(sts, "tls");
    assert_eq!((s(&m["mountPath"]), m["readOnly"].as_bool()), ("/etc/connector/tls", Some(true)));
    assert!(m["subPath"].is_badvalue(), "subPath mounts are not refreshed by the kubelet");
    let v = &volume(sts, "tls")["secret"];
    assert_eq!(s(&v["secretName"]), "s3-tls");
    assert!(v["items"].is_badvalue(), "the whole Secret, so cert-manager's renewals reach the pod");
    let c = container(sts);
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["scheme"]), "HTTPS");
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["scheme"]), "HTTPS");
    // The S3 endpoint's CA is separate and unchanged.
    assert_eq!(file_var_secret(sts, "DSXCONNECTOR_S3_ENDPOINT_VERIFY"), pair("minio-ca", "ca.pem"));

    // Mutual TLS is opt-in, and the dsx-connect CA choice and verification follow the values.
    let r = render(
        S3_CONNECTOR,
        &["--set", "asset=bkt,tls.enabled=true,tls.secretName=s3-tls,tls.trustCaForDsxConnect=false,tls.verifyDsxConnect=false"],
    );
    let sts = r.get("StatefulSet", S3_FULLNAME);
    assert_eq!(env_value(sts, "DSXCONNECTOR_USE_TLS").as_deref(), Some("true"));
    assert_eq!(env_value(sts, "DSXCONNECTOR_VERIFY_TLS").as_deref(), Some("false"));
    for var in [
        "DSXCONNECTOR_CA_BUNDLE",
        "DSXCONNECTOR_TLS_CLIENT_CERTFILE",
        "DSXCONNECTOR_TLS_CLIENT_KEYFILE",
        "DSXCONNECTOR_TLS_CLIENT_CA",
    ] {
        assert_eq!(env_value(sts, var), None, "{var}");
    }

    // Off by default: plain HTTP on the pod IP, no TLS variables, no tls volume.
    let plain = render(S3_CONNECTOR, &["--set", "asset=bkt"]);
    let sts = plain.get("StatefulSet", S3_FULLNAME);
    assert_eq!(env_value(sts, "DSXCONNECTOR_CONNECTOR_URL").as_deref(), Some("http://$(POD_IP):8600"));
    assert!(!has_env_like(sts, "TLS"), "TLS variables without tls.enabled");
    assert!(container(sts)["livenessProbe"]["httpGet"]["scheme"].is_badvalue());
    assert!(list(&sts["spec"]["template"]["spec"]["volumes"]).iter().all(|v| s(&v["name"]) != "tls"));

    let err = render_err(S3_CONNECTOR, &["--set", "asset=bkt,tls.enabled=true"]);
    assert!(err.contains("tls.secretName"), "{err}");
}
