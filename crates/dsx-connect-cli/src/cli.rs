//! Operator command line: `dsx-connect admin …` (over the operator API) and
//! `dsx-connect sign …` (a DSX-HMAC-signed curl command, for debugging and the docs).

use anyhow::Context;
use clap::Subcommand;
use dsx_hmac::{authorization_header, generate_nonce, unix_now, SigningKey};
use reqwest::Method;
use serde_json::Value;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List registered connectors with their auth state (key id, last registration, token slot).
    Connectors,
    /// Start a full scan of a connector's asset; prints the job id.
    FullScan {
        /// The connector's uuid (see `admin connectors`).
        uuid: String,
        /// Scan at most this many items.
        #[arg(long)]
        limit: Option<u64>,
        /// Use this job id instead of a generated one.
        #[arg(long)]
        job_id: Option<String>,
    },
    /// List scan jobs, most recently updated first.
    Jobs,
    /// One scan job: status and counters.
    Job { job_id: String },
    /// Scan results, newest first.
    Results {
        /// Only this job's results.
        #[arg(long = "job")]
        job_id: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Pause a running job (connectors stop enqueueing, queued items wait).
    Pause { job_id: String },
    /// Resume a paused job.
    Resume { job_id: String },
    /// Cancel a job.
    Cancel { job_id: String },
    /// Unregister a connector, revoke its keys and keep its uuid out until readmitted.
    Revoke { uuid: String },
    /// Let a revoked connector enroll again.
    Readmit { uuid: String },
    /// Restore a quarantined item to where it was found (tagged released; audited). The
    /// connector must support it (the S3 connector does).
    Release {
        /// The connector's uuid.
        uuid: String,
        /// The quarantined item, as the move reported it (e.g. `s3://bucket/dsxconnect-quarantine/a/b.exe`).
        location: String,
    },
    /// Rotate a connector's key: its next signed heartbeat gets a new one, the old key stays
    /// valid for the grace period.
    Rotate {
        uuid: String,
        /// Revoke the current key now (a leaked key); the connector re-enrolls with its
        /// enrollment token on its next call.
        #[arg(long)]
        revoke_now: bool,
    },
    /// Dead letters: list, requeue or clear.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Print a new random token (for enrollment or operator token settings).
    GenerateToken,
    /// Write a private test CA and certificates for a local TLS set-up: `ca.crt`/`ca.key`,
    /// a server pair `tls.crt`/`tls.key` for `--hosts`, a client pair `client.crt`/`client.key`
    /// (mutual TLS). For tests and local runs; production certificates come from your PKI.
    GenCerts {
        /// Folder to write into (created if missing; existing files are replaced).
        #[arg(long)]
        out: std::path::PathBuf,
        /// DNS names and IP addresses the server certificate is valid for (comma-separated
        /// or repeated). Default: localhost, 127.0.0.1, ::1 and the Compose service names.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum DeadLetterAction {
    List {
        #[arg(long, default_value_t = 0)]
        start: usize,
        #[arg(long, default_value_t = 50)]
        end: usize,
    },
    Requeue {
        #[arg(long)]
        max_items: Option<usize>,
    },
    Clear,
}

/// Where and how `admin` reaches dsx-connect.
pub struct Operator {
    pub url: String,
    pub token: Option<String>,
    /// Print the server's JSON instead of tables (for scripts).
    pub json: bool,
    /// How the server's certificate is checked (`--ca-bundle`, `--insecure`) and the client
    /// certificate presented, if any.
    pub tls: dsx_service::ClientTls,
}

/// The API path prefix; a `--url` may or may not already end with it.
const API: &str = "/dsx-connect/api/v1";

/// The server's origin from a `--url` given with or without the API prefix or a trailing `/`.
pub fn base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix(API).unwrap_or(url).trim_end_matches('/').to_owned()
}

impl Operator {
    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        Ok(self.call_with_headers(method, path, None).await?.1)
    }

    async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, Value)> {
        let url = format!("{}{API}/{path}", base_url(&self.url));
        let client = dsx_service::http_client(reqwest::Client::builder(), &self.tls).map_err(anyhow::Error::msg)?;
        let mut req = client.request(method, &url);
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(token) = self.token.as_deref().filter(|t| !t.trim().is_empty()) {
            req = req.bearer_auth(token.trim());
        }
        let resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach {url}: {}", root_cause(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok((headers, body));
        }
        let detail = match &body {
            Value::Object(o) => o.get("detail").map(|d| d.as_str().map(str::to_owned).unwrap_or_else(|| d.to_string())),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
        .unwrap_or_default();
        let code = status.as_u16();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            if self.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
                anyhow::bail!(
                    "{code}: no operator token given (set DSXCONNECT_OPERATOR_TOKEN or pass --token); {url} needs one"
                );
            }
            anyhow::bail!("{code}: the operator token was refused by {url} (wrong token?) {detail}");
        }
        if status == reqwest::StatusCode::NOT_FOUND && detail == "not_found" {
            anyhow::bail!("{code}: {url} not found (is --url a dsx-connect server?)");
        }
        anyhow::bail!("{code} {detail} ({} {url})", status.canonical_reason().unwrap_or(""));
    }
}

/// The innermost error's text (reqwest's outer ones only say "error sending request").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

pub fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain table: a header row and left-aligned columns as wide as their widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let parts: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| if i == last { c } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

/// `key  value` lines for an object (nested values as compact JSON).
fn fields(value: &Value) {
    match value {
        Value::Object(map) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                println!("{k:<width$}  {}", text(v));
            }
        }
        Value::Array(rows) if rows.is_empty() => println!("(none)"),
        other => println!("{}", text(other)),
    }
}

/// A `{status, message, description}` answer as one line.
fn outcome(value: &Value) {
    match (value.get("message"), value.get("description")) {
        (Some(m), Some(d)) => println!("{}: {}", text(m), text(d)),
        (Some(m), None) => println!("{}", text(m)),
        _ => fields(value),
    }
}

/// One table row per element of a JSON list.
fn rows(list: &Value, cells: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array().into_iter().flatten().map(cells).collect()
}

fn job_rows(jobs: &Value) -> Vec<Vec<String>> {
    rows(jobs, |j| {
        ["job_id", "status", "enqueued_count", "processed_count", "connector_uuid"]
            .iter()
            .map(|k| text(&j[*k]))
            .collect()
    })
}

const JOB_HEADERS: [&str; 5] = ["JOB ID", "STATUS", "ENQUEUED", "PROCESSED", "CONNECTOR"];

pub async fn admin(op: Operator, command: AdminCommand) -> anyhow::Result<()> {
    let json = op.json;
    let print_json = |v: &Value| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match command {
        AdminCommand::GenCerts { out, hosts } => {
            let hosts = if hosts.is_empty() { dsx_service::tls::certgen::default_hosts() } else { hosts };
            let written = dsx_service::tls::certgen::write_set(&out, &hosts).map_err(anyhow::Error::msg)?;
            for path in written {
                println!("{}", path.display());
            }
        }
        AdminCommand::GenerateToken => {
            let token = random_token();
            if json {
                print_json(&serde_json::json!({ "token": token }))?;
            } else {
                println!("{token}");
            }
        }
        AdminCommand::Connectors => {
            let list = op.call(Method::GET, "connectors/list").await?;
            if json {
                return print_json(&list);
            }
            let rows = rows(&list, |r| {
                vec![
                    text(&r["uuid"]),
                    text(&r["name"]),
                    text(&r["auth"]["hmac_key_id"]),
                    text(&r["auth"]["registered_via"]),
                    text(&r["url"]),
                ]
            });
            table(&["UUID", "NAME", "KEY ID", "REGISTERED VIA", "URL"], rows);
        }
        AdminCommand::FullScan { uuid, limit, job_id } => {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(job_id) = job_id {
                query.push(format!("job_id={}", url_encode(&job_id)));
            }
            let path = if query.is_empty() {
                format!("connectors/full_scan/{uuid}")
            } else {
                format!("connectors/full_scan/{uuid}?{}", query.join("&"))
            };
            let (headers, body) = op.call_with_headers(Method::POST, &path, None).await?;
            let job = headers.get("x-job-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let job = job.or_else(|| body["id"].as_str().map(str::to_owned)).unwrap_or_default();
            if json {
                return print_json(&serde_json::json!({ "job_id": job, "connector": body }));
            }
            println!("full scan started: job {job}");
            println!("follow it with: dsx-connect admin job {job}");
        }
        AdminCommand::Jobs => {
            let jobs = op.call(Method::GET, "scan/jobs").await?;
            if json {
                return print_json(&jobs);
            }
            table(&JOB_HEADERS, job_rows(&jobs));
        }
        AdminCommand::Job { job_id } => {
            let job = op.call(Method::GET, &format!("scan/jobs/{}", url_encode(&job_id))).await?;
            if json {
                return print_json(&job);
            }
            fields(&job);
        }
        AdminCommand::Results { job_id, limit } => {
            let mut path = format!("scan/results?limit={limit}");
            if let Some(job_id) = job_id {
                path.push_str(&format!("&job_id={}", url_encode(&job_id)));
            }
            let list = op.call(Method::GET, &path).await?;
            if json {
                return print_json(&list);
            }
            // ACTION is the result's status: scanned, action succeeded, action attempted…
            let rows = rows(&list, |r| {
                vec![
                    text(&r["verdict"]["verdict"]),
                    text(&r["scan_job_id"]),
                    text(&r["status"]),
                    text(&r["scan_request"]["location"]),
                ]
            });
            table(&["VERDICT", "JOB ID", "ACTION", "LOCATION"], rows);
        }
        AdminCommand::Pause { job_id } => job_control(&op, &job_id, "pause", "paused").await?,
        AdminCommand::Resume { job_id } => job_control(&op, &job_id, "resume", "resumed").await?,
        AdminCommand::Cancel { job_id } => job_control(&op, &job_id, "cancel", "cancelled").await?,
        AdminCommand::Revoke { uuid } => {
            let body = op.call(Method::DELETE, &format!("connectors/unregister/{uuid}")).await?;
            if json {
                return print_json(&body);
            }
            println!("revoked {uuid}");
        }
        AdminCommand::Readmit { uuid } => {
            let body = op.call(Method::POST, &format!("connectors/readmit/{uuid}")).await?;
            if json {
                return print_json(&body);
            }
            outcome(&body);
        }
        AdminCommand::Release { uuid, location } => {
            let request = serde_json::json!({ "location": location });
            let (_, body) =
                op.call_with_headers(Method::POST, &format!("connectors/release/{uuid}"), Some(&request)).await?;
            if json {
                return print_json(&body);
            }
            outcome(&body);
        }
        AdminCommand::Rotate { uuid, revoke_now } => {
            let query = if revoke_now { "?revoke_now=true" } else { "" };
            let body = op.call(Method::POST, &format!("connectors/rotate/{uuid}{query}")).await?;
            if json {
                return print_json(&body);
            }
            outcome(&body);
        }
        AdminCommand::DeadLetters { action: DeadLetterAction::List { start, end } } => {
            let body =
                op.call(Method::GET, &format!("admin/dead-letter/items/scan_request?start={start}&end={end}")).await?;
            if json {
                return print_json(&body);
            }
            let items = body["items"].as_array().cloned().unwrap_or_default();
            println!("{} dead letter(s)", text(body.get("total").unwrap_or(&Value::from(items.len()))));
            for item in &items {
                println!("{}", serde_json::to_string(item)?);
            }
        }
        AdminCommand::DeadLetters { action: DeadLetterAction::Requeue { max_items } } => {
            let query = max_items.map(|n| format!("?max_items={n}")).unwrap_or_default();
            let body = op.call(Method::POST, &format!("admin/dead-letter/requeue{query}")).await?;
            if json {
                return print_json(&body);
            }
            fields(&body);
        }
        AdminCommand::DeadLetters { action: DeadLetterAction::Clear } => {
            let body = op.call(Method::DELETE, "admin/dead-letter/clear").await?;
            if json {
                return print_json(&body);
            }
            fields(&body);
        }
    }
    Ok(())
}

async fn job_control(op: &Operator, job_id: &str, verb: &str, done: &str) -> anyhow::Result<()> {
    let body = op.call(Method::POST, &format!("scan/jobs/{}/{verb}", url_encode(job_id))).await?;
    if op.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        println!("job {job_id} {done}");
    }
    Ok(())
}

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A curl command carrying a fresh DSX-HMAC signature for `method url [body]`. The secret is
/// read from a file so it never appears in the shell history or the process list.
pub fn signed_curl(key_id: &str, secret: &str, method: &str, url: &str, body: Option<&str>) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let paq = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let method = method.to_ascii_uppercase();
    let body = body.unwrap_or("");
    let header = authorization_header(
        &SigningKey::new(secret),
        key_id,
        &method,
        &paq,
        unix_now(),
        &generate_nonce(),
        body.as_bytes(),
    );
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut cmd =
        format!("curl -sS -X {method} {} -H {}", quote(parsed.as_str()), quote(&format!("Authorization: {header}")));
    if !body.is_empty() {
        cmd.push_str(&format!(" -H 'Content-Type: application/json' --data-raw {}", quote(body)));
    }
    Ok(cmd)
}
