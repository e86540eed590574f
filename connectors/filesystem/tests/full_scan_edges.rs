//! Full scans of folders a first-time user points the connector at: an empty folder and an
//! unreadable one. The real `dsx-connect serve` (embedded store, workers) and the real
//! `filesystem-connector`, auth on, over loopback.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use dsx_testkit::{free_port, workspace_bin, Service};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const ENROLL: &str = "edges-enrollment-token";
const OPERATOR: &str = "edges-operator-token";
const API: &str = "/dsx-connect/api/v1";

struct Stack {
    server: Service,
    connector: Service,
    uuid: String,
    http: reqwest::Client,
    _dirs: Vec<tempfile::TempDir>,
}

impl Stack {
    fn start(asset: &Path) -> Self {
        let server_data = tempfile::tempdir().unwrap();
        let server_port = free_port();
        let mut server = Service::spawn(
            workspace_bin("dsx-connect").to_str().unwrap(),
            &["serve", "--listen", &format!("127.0.0.1:{server_port}")],
            &[
                ("DSXCONNECT_DATA_DIR", server_data.path().display().to_string()),
                ("DSXCONNECT_AUTH__ENABLED", "true".into()),
                ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
                ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
                ("DSXCONNECT_SCANNER__KIND", "builtin".into()),
            ],
            server_port,
        );
        server.wait_http(&format!("{API}/healthz"), 200, Duration::from_secs(20));
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut connector = Service::spawn(
            workspace_bin("filesystem-connector").to_str().unwrap(),
            &["--listen", &format!("127.0.0.1:{port}")],
            &[
                ("DSXCONNECTOR_ASSET", asset.display().to_string()),
                ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
                ("DSXCONNECTOR_DSX_CONNECT_URL", format!("http://127.0.0.1:{server_port}")),
                ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
                ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
                ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.into()),
                ("DSXCONNECTOR_ITEM_ACTION", "nothing".into()),
            ],
            port,
        );
        connector.wait_http("/filesystem-connector/readyz", 200, Duration::from_secs(20));
        let uuid = std::fs::read_to_string(data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();
        Self { server, connector, uuid, http: reqwest::Client::new(), _dirs: vec![server_data, data] }
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{API}/{path}", self.server.port)
    }

    async fn operator(&self, method: Method, path: &str) -> reqwest::Response {
        self.http.request(method, self.api(path)).bearer_auth(OPERATOR).send().await.unwrap()
    }

    /// An operator full scan: 202 and its job id.
    async fn full_scan(&self) -> String {
        let resp = self.operator(Method::POST, &format!("connectors/full_scan/{}", self.uuid)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        resp.headers()["x-job-id"].to_str().unwrap().to_owned()
    }

    /// `GET scan/jobs/{id}` once the job completed. A 404 at any point fails: the job exists
    /// from the moment the full scan was accepted.
    async fn completed_job(&self, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let resp = self.operator(Method::GET, &format!("scan/jobs/{job_id}")).await;
            assert_eq!(resp.status(), StatusCode::OK, "job {job_id} must exist once the scan was accepted");
            let job: Value = resp.json().await.unwrap();
            if job["status"] == "completed" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} never completed: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn repo_check(&self) -> Value {
        let resp = self.operator(Method::GET, &format!("connectors/repo_check/{}", self.uuid)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }
}

/// Whether permissions can make a folder unreadable here (not as root, or with
/// CAP_DAC_READ_SEARCH): chmod 000 a probe folder and try to list it.
fn permissions_block_reads(base: &Path) -> bool {
    let probe = base.join("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).unwrap();
    let blocked = std::fs::read_dir(&probe).is_err();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(&probe).unwrap();
    blocked
}

#[tokio::test]
async fn an_empty_folder_scans_to_a_completed_job_with_zero_items() {
    let asset = tempfile::tempdir().unwrap();
    let stack = Stack::start(asset.path());
    assert_eq!(stack.repo_check().await["status"], "success");
    let job_id = stack.full_scan().await;
    let job = stack.completed_job(&job_id).await;
    assert_eq!((job["enqueued_count"].as_u64(), job["processed_count"].as_u64()), (Some(0), Some(0)), "{job}");
    assert_eq!(job["enqueue_done"], true, "{job}");
    assert_eq!(job["enumeration_errors"], 0, "{job}");
    assert_eq!(job["connector_uuid"], stack.uuid.as_str(), "{job}");
}

#[tokio::test]
async fn unreadable_folders_are_counted_on_the_job_and_fail_repo_check() {
    let asset = tempfile::tempdir().unwrap();
    let root = asset.path();
    std::fs::write(root.join("a.txt"), "alpha").unwrap();
    std::fs::create_dir_all(root.join("locked")).unwrap();
    std::fs::write(root.join("locked/secret.txt"), "hidden").unwrap();
    std::fs::create_dir_all(root.join("open")).unwrap();
    std::fs::write(root.join("open/b.txt"), "bravo").unwrap();
    let stack = Stack::start(root);
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();

    if permissions_block_reads(root) {
        // A subfolder the connector may not read: the scan goes on, the job says so.
        mode(&root.join("locked"), 0o000);
        let job_id = stack.full_scan().await;
        let job = stack.completed_job(&job_id).await;
        mode(&root.join("locked"), 0o755);
        assert_eq!(job["processed_count"], 2, "{job}");
        assert_eq!(job["enumeration_errors"], 1, "the unreadable folder is counted: {job}");
        assert!(stack.connector.logs().contains("enumeration error"), "{}", stack.connector.logs());

        // The asset itself unreadable: repo_check is an error, not "connectivity success".
        mode(root, 0o000);
        let check = stack.repo_check().await;
        mode(root, 0o755);
        assert_eq!(check["status"], "error", "{check}");
        assert!(check["description"].as_str().unwrap_or_default().contains("ermission"), "{check}");
    } else {
        eprintln!(
            "SKIPPED (sub-case): permissions do not block reads here (running as root?); \
             the chmod 000 folder and asset cases need an unprivileged user"
        );
        let job_id = stack.full_scan().await;
        let job = stack.completed_job(&job_id).await;
        assert_eq!((job["processed_count"].as_u64(), job["enumeration_errors"].as_u64()), (Some(3), Some(0)), "{job}");
    }

    // The asset path no longer a folder (replaced by a file): repo_check is an error.
    let moved = root.with_extension("moved");
    std::fs::rename(root, &moved).unwrap();
    std::fs::write(root, "not a folder").unwrap();
    let check = stack.repo_check().await;
    std::fs::remove_file(root).unwrap();
    std::fs::rename(&moved, root).unwrap();
    assert_eq!(check["status"], "error", "{check}");
    assert!(check["description"].as_str().unwrap_or_default().contains("not a folder"), "{check}");
}
