//! The deploy files, checked without Docker: the Compose files wire auth the way the docs
//! say (one token variable reaching both sides), and every variable they set is one the code
//! reads; the Dockerfiles build packages and expose ports that exist.

#[path = "common/deploy.rs"]
mod deploy;

use deploy::{known, repo, sources};
use yaml_rust2::{Yaml, YamlLoader};

fn compose(name: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join("deploy/compose").join(name)).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn env<'a>(doc: &'a Yaml, service: &str) -> &'a yaml_rust2::yaml::Hash {
    doc["services"][service]["environment"].as_hash().unwrap_or_else(|| panic!("{service} has an environment map"))
}

fn value(env: &yaml_rust2::yaml::Hash, key: &str) -> String {
    env.get(&Yaml::String(key.into())).and_then(Yaml::as_str).unwrap_or_else(|| panic!("{key} is set")).to_owned()
}

#[test]
fn auth_compose_passes_one_token_to_both_sides() {
    let doc = compose("auth.yaml");
    let server = env(&doc, "dsx-connect");
    let connector = env(&doc, "filesystem-connector");
    assert_eq!(value(server, "DSXCONNECT_AUTH__ENABLED"), "true");
    assert_eq!(value(server, "DSXCONNECT_AUTH__BREAK_GLASS"), "false");
    assert_eq!(value(connector, "DSXCONNECTOR_AUTH__ENABLED"), "true");
    let server_token = value(server, "DSXCONNECT_AUTH__ENROLLMENT_TOKEN");
    let connector_token = value(connector, "DSXCONNECT_ENROLLMENT_TOKEN");
    assert!(server_token.starts_with("${DSXCONNECT_ENROLLMENT_TOKEN"), "{server_token}");
    assert_eq!(server_token, connector_token, "the same variable reaches both sides");
    assert!(server_token.contains(":?"), "compose refuses to start without the token");
    // The S3 service (profile `s3`) takes the same token variable.
    let s3 = env(&doc, "aws-s3-connector");
    assert_eq!(value(s3, "DSXCONNECTOR_AUTH__ENABLED"), "true");
    assert_eq!(value(s3, "DSXCONNECT_ENROLLMENT_TOKEN"), server_token);
    // HTTPS like every other hop of this file, with the generated test CA.
    assert_eq!(value(s3, "DSXCONNECTOR_CONNECTOR_URL"), "https://aws-s3-connector:8600");
    assert_eq!(value(s3, "DSXCONNECTOR_DSX_CONNECT_URL"), "https://dsx-connect:8586");
    assert_eq!(value(s3, "DSXCONNECTOR_USE_TLS"), "true");
    assert_eq!(value(s3, "DSXCONNECTOR_CA_BUNDLE"), "/etc/dsx-tls/ca.crt");
    let profiles = doc["services"]["aws-s3-connector"]["profiles"].as_vec().unwrap();
    assert_eq!(profiles.first().and_then(Yaml::as_str), Some("s3"), "only started on request");
    let quick = compose("quickstart.yaml");
    assert_eq!(value(env(&quick, "dsx-connect"), "DSXCONNECT_AUTH__ENABLED"), "false");
}

#[test]
fn compose_files_only_set_variables_the_code_reads() {
    let sources = sources();
    for file in ["auth.yaml", "quickstart.yaml"] {
        let doc = compose(file);
        for (name, service) in doc["services"].as_hash().unwrap() {
            let Some(env) = service["environment"].as_hash() else { continue };
            for key in env.keys().filter_map(Yaml::as_str) {
                assert!(known(&sources, key), "{file}: {} sets {key}, which no code reads", name.as_str().unwrap());
            }
        }
    }
}

#[test]
fn dockerfiles_build_workspace_binaries_on_their_default_ports() {
    for (file, package, bin, port) in [
        ("dsx-connect.Dockerfile", "dsx-connect-cli", "dsx-connect", "8586"),
        ("filesystem-connector.Dockerfile", "filesystem-connector", "filesystem-connector", "8620"),
        ("aws-s3-connector.Dockerfile", "s3-connector", "s3-connector", "8600"),
    ] {
        let text = std::fs::read_to_string(repo().join("deploy/docker").join(file)).unwrap();
        assert!(text.contains(&format!("-p {package} --bin {bin}")), "{file}");
        assert!(text.contains(&format!("EXPOSE {port}")), "{file}");
        assert!(text.contains("USER 10001"), "{file} runs as non-root");
    }
}

/// A fresh clone runs the Compose files: every host folder they bind-mount exists in the
/// repository (Docker would create a missing one owned by root), and the files say which uid
/// the connector runs as, the one its Dockerfile sets.
#[test]
fn compose_bind_mounts_exist_in_the_repository_and_name_the_connector_uid() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/docker/filesystem-connector.Dockerfile")).unwrap();
    let uid = dockerfile.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line").trim().to_owned();
    for file in ["auth.yaml", "quickstart.yaml"] {
        let text = std::fs::read_to_string(repo().join("deploy/compose").join(file)).unwrap();
        assert!(text.contains(&format!("uid {uid}")), "{file} says the connector runs as uid {uid}");
        let doc = compose(file);
        let mut mounts = 0;
        for (_, service) in doc["services"].as_hash().unwrap() {
            for volume in service["volumes"].as_vec().into_iter().flatten().filter_map(Yaml::as_str) {
                let host = volume.split(':').next().unwrap();
                if !host.starts_with('.') {
                    continue; // a named volume
                }
                mounts += 1;
                let path = repo().join("deploy/compose").join(host);
                assert!(path.is_dir(), "{file}: {host} must exist in the repository ({})", path.display());
                let tracked = std::fs::read_dir(&path).unwrap().count();
                assert!(tracked > 0, "{file}: {host} holds a tracked file, so git keeps it");
            }
        }
        assert!(mounts > 0, "{file} mounts the scan folder");
    }
    let readme = std::fs::read_to_string(repo().join("scan/README.md")).unwrap();
    assert!(readme.contains(&format!("chown -R {uid} scan")), "{readme}");
}

/// The auth Compose file runs every hop on HTTPS with the test CA its `tls-certs` job makes:
/// both servers read the generated files, each client trusts the generated CA, and the URLs
/// are https.
#[test]
fn auth_compose_serves_https_with_a_generated_test_ca() {
    let doc = compose("auth.yaml");
    let job = &doc["services"]["tls-certs"];
    let entrypoint: Vec<&str> = job["entrypoint"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
    let script = entrypoint.join(" ");
    assert!(script.contains("dsx-connect admin gen-certs --out /var/lib/dsx-connect"), "{script}");
    for host in ["dsx-connect", "filesystem-connector"] {
        assert!(script.contains(host), "the server certificate covers {host}: {script}");
    }
    let server = env(&doc, "dsx-connect");
    let connector = env(&doc, "filesystem-connector");
    assert_eq!(value(server, "DSXCONNECT_USE_TLS"), "true");
    assert_eq!(value(connector, "DSXCONNECTOR_USE_TLS"), "true");
    for (env, var) in [
        (server, "DSXCONNECT_TLS_CERTFILE"),
        (server, "DSXCONNECT_TLS_KEYFILE"),
        (server, "DSXCONNECT_CONNECTORS__CA_BUNDLE"),
        (connector, "DSXCONNECTOR_TLS_CERTFILE"),
        (connector, "DSXCONNECTOR_TLS_KEYFILE"),
        (connector, "DSXCONNECTOR_CA_BUNDLE"),
    ] {
        assert!(value(env, var).starts_with("/etc/dsx-tls/"), "{var} points into the mounted certificates");
    }
    assert!(value(connector, "DSXCONNECTOR_DSX_CONNECT_URL").starts_with("https://"));
    assert!(value(connector, "DSXCONNECTOR_CONNECTOR_URL").starts_with("https://"));
    for service in ["dsx-connect", "filesystem-connector"] {
        let volumes: Vec<&str> =
            doc["services"][service]["volumes"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
        assert!(volumes.contains(&"tls-certs:/etc/dsx-tls:ro"), "{service} mounts the certificates read-only");
    }
    assert_eq!(
        doc["services"]["dsx-connect"]["depends_on"]["tls-certs"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
}
