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
    /// Unregister a connector, revoke its keys and keep its uuid out until readmitted.
    Revoke { uuid: String },
    /// Let a revoked connector enroll again.
    Readmit { uuid: String },
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
}

impl Operator {
    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}/dsx-connect/api/v1/{path}", self.url.trim_end_matches('/'));
        let mut req = reqwest::Client::new().request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
        Ok(body)
    }
}

pub fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub async fn admin(op: Operator, command: AdminCommand) -> anyhow::Result<()> {
    let out = match command {
        AdminCommand::GenerateToken => {
            println!("{}", random_token());
            return Ok(());
        }
        AdminCommand::Connectors => {
            let rows = op.call(Method::GET, "connectors/list").await?;
            println!("{:<38} {:<24} {:<18} {:<16} URL", "UUID", "NAME", "KEY ID", "REGISTERED VIA");
            for r in rows.as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<24} {:<18} {:<16} {}",
                    r["uuid"].as_str().unwrap_or("-"),
                    r["name"].as_str().unwrap_or("-"),
                    r["auth"]["hmac_key_id"].as_str().unwrap_or("-"),
                    r["auth"]["registered_via"].as_str().unwrap_or("-"),
                    r["url"].as_str().unwrap_or("-"),
                );
            }
            return Ok(());
        }
        AdminCommand::Revoke { uuid } => op
            .call(Method::DELETE, &format!("connectors/unregister/{uuid}"))
            .await
            .map(|_| Value::String(format!("revoked {uuid}")))?,
        AdminCommand::Readmit { uuid } => op.call(Method::POST, &format!("connectors/readmit/{uuid}")).await?,
        AdminCommand::Rotate { uuid, revoke_now } => {
            let query = if revoke_now { "?revoke_now=true" } else { "" };
            op.call(Method::POST, &format!("connectors/rotate/{uuid}{query}")).await?
        }
        AdminCommand::DeadLetters { action: DeadLetterAction::List { start, end } } => {
            op.call(Method::GET, &format!("admin/dead-letter/items/scan_request?start={start}&end={end}")).await?
        }
        AdminCommand::DeadLetters { action: DeadLetterAction::Requeue { max_items } } => {
            let query = max_items.map(|n| format!("?max_items={n}")).unwrap_or_default();
            op.call(Method::POST, &format!("admin/dead-letter/requeue{query}")).await?
        }
        AdminCommand::DeadLetters { action: DeadLetterAction::Clear } => {
            op.call(Method::DELETE, "admin/dead-letter/clear").await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
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
