//! Every Redis key name dsx-connect uses, in one place. All live under
//! `<DSXCONNECT_APP_ENV>:dsx-connect:`, so two environments sharing one Redis never see each
//! other's connectors, queue, jobs, results or state (docs/wire-protocol.md, "Redis layout").

use uuid::Uuid;

/// Key names under one environment's prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(env: &str) -> Self {
        Self { prefix: format!("{env}:dsx-connect") }
    }

    // ---- registry ----
    pub(crate) fn presence(&self, uuid: Uuid) -> String {
        format!("{}:connectors:presence:{uuid}", self.prefix)
    }
    pub(crate) fn presence_pattern(&self) -> String {
        format!("{}:connectors:presence:*", self.prefix)
    }
    pub(crate) fn registration(&self, uuid: Uuid) -> String {
        format!("{}:connectors:registration:{uuid}", self.prefix)
    }
    /// The uuids that have a registration record, so they can be listed without a SCAN.
    pub(crate) fn registrations(&self) -> String {
        format!("{}:connectors:registrations", self.prefix)
    }
    pub(crate) fn state(&self, uuid: Uuid, ns: &str, key: &str) -> String {
        format!("{}:connector_state:{uuid}:{ns}:{key}", self.prefix)
    }

    // ---- credentials ----
    /// A connector's config hash (its current key id and sealed secret).
    pub(crate) fn config(&self, uuid: Uuid) -> String {
        format!("{}{uuid}", self.config_prefix())
    }
    pub(crate) fn config_prefix(&self) -> String {
        format!("{}:connectors:config:", self.prefix)
    }
    /// Key id → owner uuid (the current key of a connector).
    pub(crate) fn kid(&self, key_id: &str) -> String {
        format!("{}:hmac:kid:{key_id}", self.prefix)
    }
    /// A previous key in its grace period.
    pub(crate) fn grace(&self, key_id: &str) -> String {
        format!("{}:connectors:grace:{key_id}", self.prefix)
    }
    pub(crate) fn grace_set(&self, uuid: Uuid) -> String {
        format!("{}:connectors:grace_kids:{uuid}", self.prefix)
    }
    pub(crate) fn nonce(&self, key_id: &str, nonce: &str) -> String {
        format!("{}:hmac:nonce:{key_id}:{nonce}", self.prefix)
    }

    // ---- queue ----
    pub(crate) fn scan_queue(&self) -> String {
        format!("{}:queue:scan_request", self.prefix)
    }
    pub(crate) fn delayed(&self) -> String {
        format!("{}:queue:scan_request:delayed", self.prefix)
    }
    pub(crate) fn dead_letters(&self) -> String {
        format!("{}:dlq:scan_request", self.prefix)
    }
    pub(crate) fn intake(&self, key: &str) -> String {
        format!("{}:intake:{key}", self.prefix)
    }

    // ---- jobs ----
    pub(crate) fn job(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}", self.prefix)
    }

    // ---- results ----
    /// The newest results (a capped list of result documents).
    pub(crate) fn results(&self) -> String {
        format!("{}:scan_results", self.prefix)
    }
    pub(crate) fn result_seq(&self) -> String {
        format!("{}:scan_results:seq", self.prefix)
    }
    pub(crate) fn result_by_task(&self, task_id: &str) -> String {
        format!("{}:scan_result_by_task:{task_id}", self.prefix)
    }
    pub(crate) fn job_results(&self, job_id: &str) -> String {
        format!("{}:scan_results_by_job:{job_id}", self.prefix)
    }
    pub(crate) fn stats(&self) -> String {
        format!("{}:scan_stats", self.prefix)
    }

    // ---- events and limits ----
    pub(crate) fn channel(&self, channel: &str) -> String {
        format!("{}:notify:{channel}", self.prefix)
    }
    pub(crate) fn inflight(&self) -> String {
        format!("{}:scan:inflight", self.prefix)
    }
    pub(crate) fn rate_window(&self, bucket: &str, index: u64) -> String {
        format!("{}:ratelimit:{bucket}:{index}", self.prefix)
    }
}
