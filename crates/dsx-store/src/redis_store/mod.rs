//! Redis backend: shared by every API and worker replica. Key names follow the Python 1.x
//! layout where Python components read them (docs/wire-protocol.md, "Redis layout").

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dsx_model::{Connector, StoredResult};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, RedisError};
use uuid::Uuid;

use crate::{
    now_secs, with_id, Credential, Credentials, DeadLetter, Delivery, Enqueued, Events, Health, Intake, IntakeResult,
    Job, JobRefusal, JobStatus, Jobs, Limits, QueuedTask, RateWindow, RegistrationRecord, Registry, ResolvedKey,
    ResultRecord, Results, ScanQueue, SecretCodec, StoreError, StoreResult,
};

mod credentials;
mod events;
mod health;
mod jobs;
mod keys;
mod limits;
mod queue;
mod registry;
mod results;

/// Connect and response timeouts: a store that is away answers `Unavailable` quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscriber count of a notification channel is looked at again.
const LISTENERS_RECHECK: Duration = Duration::from_millis(500);

/// The last subscriber count of a notification channel.
struct ListenerCount {
    checked: Option<std::time::Instant>,
    any: bool,
    refreshing: bool,
}

/// Longest blocking read of the queue.
const MAX_BLOCK: Duration = Duration::from_secs(5);

/// Which deployment environment the keys belong to (`DSXCONNECT_APP_ENV`, default `dev`).
#[derive(Clone, Debug)]
pub struct Namespace {
    pub env: String,
}

pub struct RedisStore {
    client: redis::Client,
    /// Created on first use and kept; `ConnectionManager` reconnects by itself afterwards.
    conn: tokio::sync::OnceCell<ConnectionManager>,
    /// A connection of its own for blocking reads of the queue (a blocked command would hold
    /// up every other command on the shared one); dropped after an error, made again on use.
    blocking: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Whether each notification channel has subscribers anywhere (see `may_have_listeners`).
    /// Requests sent (see `Health::round_trips`).
    round_trips: std::sync::atomic::AtomicU64,
    listeners: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, ListenerCount>>>,
    keys: keys::Keys,
    codec: SecretCodec,
    /// TTL of a finished job's keys, ms; 0 keeps them forever.
    job_retention_ms: u64,
}

/// IO, timeouts and server-side refusals are `Unavailable`; replies we cannot decode are `Corrupt`.
fn map_err(err: RedisError) -> StoreError {
    let wrong_type = err.code() == Some("WRONGTYPE");
    match err.kind() {
        // redis-rs type errors quote the reply, which may be a secret: never pass the text on.
        ErrorKind::TypeError | ErrorKind::ParseError => {
            StoreError::Corrupt(format!("unexpected reply from Redis ({})", err.category()))
        }
        _ if wrong_type => wrong_type_error(),
        _ => StoreError::Unavailable(err.to_string()),
    }
}

/// A command error caught inside a script (`pcall`), read as [`map_err`] reads a reply error.
fn script_error(message: &str) -> StoreError {
    if message.starts_with("WRONGTYPE") {
        wrong_type_error()
    } else {
        StoreError::Unavailable(format!("Redis: {message}"))
    }
}

fn wrong_type_error() -> StoreError {
    StoreError::Corrupt("a Redis key holds the wrong type".into())
}

/// An `EVALSHA` of `script` taking `keys` keys, for the caller to write (the keys, then the
/// arguments) and send with [`RedisStore::eval`]. The scripts of every scanned file go this
/// way: `ScriptInvocation` allocates each argument and copies them all again into the command.
fn evalsha(script: &redis::Script, keys: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

/// Milliseconds, rounded up so a sub-millisecond TTL is not zero (which Redis rejects).
fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_nanos().div_ceil(1_000_000) as u64).max(1)
}

/// Rotation as one atomic step: reading the old key id and writing the new one in separate
/// round trips would let two concurrent installs orphan a key index entry forever.
/// KEYS: config hash, new kid index, grace-kid set.
/// ARGV: new kid, sealed secret, issued_at, uuid, grace ms (0 = revoke old), kid index prefix,
/// grace record prefix.
const INSTALL_SCRIPT: &str = r"
local old = redis.call('HMGET', KEYS[1], 'hmac_key_id', 'hmac_secret')
local grace = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'hmac_key_id', ARGV[1], 'hmac_secret', ARGV[2], 'issued_at', ARGV[3])
redis.call('SET', KEYS[2], ARGV[4])
redis.call('DEL', ARGV[7] .. ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
if old[1] and old[1] ~= ARGV[1] then
  if grace > 0 and old[2] then
    redis.call('SET', ARGV[7] .. old[1], old[2], 'PX', ARGV[5])
    redis.call('PEXPIRE', ARGV[6] .. old[1], ARGV[5])
    redis.call('SADD', KEYS[3], old[1])
  else
    redis.call('DEL', ARGV[6] .. old[1])
  end
end
local longest = 0
for _, kid in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local left = redis.call('PTTL', ARGV[7] .. kid)
  if left == -2 then
    redis.call('SREM', KEYS[3], kid)
  elseif left > longest then
    longest = left
  end
end
if longest > 0 then
  redis.call('PEXPIRE', KEYS[3], longest)
end
return 0
";

/// One claim, in one round trip: due retries move back onto the stream, the consumer group
/// is created if Redis lost it, entries whose holder's lease ran out are taken over
/// (XAUTOCLAIM), then new ones are read (XREADGROUP), and each comes with its job's status and
/// whether its task already has a result. KEYS: stream, delay set. ARGV: now ms, group,
/// consumer, lease ms, max, job key prefix, by-task key prefix.
/// Returns a flat list of {entry id, task json, attempt, job status or '', has result 0/1}.
const CLAIM_SCRIPT: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 200)
for _, m in ipairs(due) do
  local sep = string.find(m, '|', 1, true)
  redis.call('XADD', KEYS[1], '*', 'task', string.sub(m, sep + 1), 'attempt', string.sub(m, 1, sep - 1))
  redis.call('ZREM', KEYS[2], m)
end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
local max = tonumber(ARGV[5])
local out = {}
local n = 0
local function add(entry, bump)
  if type(entry) ~= 'table' or type(entry[2]) ~= 'table' then return end
  local fields = entry[2]
  local task, attempt = '', '1'
  for i = 1, #fields, 2 do
    if fields[i] == 'task' then task = fields[i + 1] elseif fields[i] == 'attempt' then attempt = fields[i + 1] end
  end
  local status, has = '', 0
  local ok, doc = pcall(cjson.decode, task)
  if ok and type(doc) == 'table' then
    if type(doc['job_id']) == 'string' then status = redis.call('HGET', ARGV[6] .. doc['job_id'], 'status') or '' end
    if type(doc['task_id']) == 'string' then has = redis.call('EXISTS', ARGV[7] .. doc['task_id']) end
  end
  for _, v in ipairs({entry[1], task, tostring((tonumber(attempt) or 1) + bump), status, has}) do
    table.insert(out, v)
  end
  n = n + 1
end
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], ARGV[4], '0-0', 'COUNT', max)
for _, e in ipairs(claimed[2]) do add(e, 1) end
if n < max then
  local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', max - n, 'STREAMS', KEYS[1], '>')
  if fresh then for _, e in ipairs(fresh[1][2]) do add(e, 0) end end
end
return out
";

/// Ack and delete a stream entry, then optionally park it (delay set), in one step (dead
/// letters go with their result, in [`COMPLETE_SCRIPT`]).
/// KEYS: stream, delay set. ARGV: group, entry id, mode (ack|retry), score, member.
const SETTLE_SCRIPT: &str = r"
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if acked == 0 then return 0 end
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
end
return 1
";

/// Store a result once per task and count it into its job and the stats, completing the
/// job when it is done. A finished job's (or a job-less) result expires with the job's
/// retention. KEYS: results list, by-task key, by-job list, job hash, stats hash.
/// ARGV: json, retain, verdict counter, succeeded (1/0), scan µs, file size, now, retention ms
/// (0 = keep). Returns 0 (already stored), 1, or 2 when this result completed its job.
/// The job completion rule (`Job::is_complete`), the one place Redis applies it: a running
/// job whose `enqueue_done` arrived and whose every accepted item is done becomes completed.
/// Every script that changes what the rule reads ends by calling it.
macro_rules! completion_rule_lua {
    () => {
        r"
local function complete_if_done(job, now)
  local h = redis.call('HMGET', job, 'enqueue_done', 'processed_count', 'enqueued_count', 'status')
  if h[1] == '1' and tonumber(h[2] or '0') >= tonumber(h[3] or '0') and h[4] == 'running' then
    redis.call('HSET', job, 'status', 'completed', 'completed_at', now)
    return true
  end
  return false
end
"
    };
}

/// `enqueue_done` in one step: flags and counts set, then the completion rule.
/// KEYS: job hash. ARGV: now, expected total or '', enumeration errors or ''.
/// Returns 0 (no such job), 1, or 2 when the job completed now.
const ENQUEUE_DONE_SCRIPT: &str = concat!(
    completion_rule_lua!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'enqueue_done', '1', 'updated_at', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'expected_total', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'enumeration_errors', ARGV[3]) end
if complete_if_done(KEYS[1], ARGV[1]) then return 2 end
return 1
"
);

/// A job's status in one step (an operator's pause, resume or cancel), then the completion
/// rule: a job resumed after its last item finished completes. KEYS: job hash. ARGV: status,
/// now. Returns '' when there is no such job, else the status it has now.
const JOB_STATUS_SCRIPT: &str = concat!(
    completion_rule_lua!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return '' end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2])
complete_if_done(KEYS[1], ARGV[2])
return redis.call('HGET', KEYS[1], 'status')
"
);

/// Store one result (the document in `doc`) once per task and count it into its job and the
/// stats, completing the job when it is done (the rule of `Job::is_complete`). A finished
/// job's (or a job-less) result expires with the job's retention. KEYS: results list, by-task
/// key, by-job list, job hash, stats hash. ARGV (from 2): retain, verdict counter, succeeded
/// (1/0), scan µs, file size, now, retention ms (0 = keep). Sets `completed_now`.
macro_rules! store_result_lua {
    () => {
        r"
redis.call('SET', KEYS[2], doc)
redis.call('LPUSH', KEYS[1], doc)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('RPUSH', KEYS[3], doc)
redis.call('HINCRBY', KEYS[5], 'files_scanned', 1)
redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
redis.call('HINCRBY', KEYS[5], 'total_scan_time_in_microseconds', ARGV[5])
redis.call('HINCRBY', KEYS[5], 'total_file_size', ARGV[6])
local ttl = tonumber(ARGV[8])
-- A result without a job record (deleted) belongs to nothing that will ever finish: it
-- expires like a finished job's.
local finished = true
local completed_now = false
if redis.call('EXISTS', KEYS[4]) == 1 then
  local processed = redis.call('HINCRBY', KEYS[4], 'processed_count', 1)
  if ARGV[4] == '1' then
    redis.call('HINCRBY', KEYS[4], 'succeeded_count', 1)
  else
    redis.call('HINCRBY', KEYS[4], 'failed_count', 1)
  end
  redis.call('HSET', KEYS[4], 'updated_at', ARGV[7])
  -- The server's accepted count decides, never the connector's expected_total (Job::is_complete).
  completed_now = complete_if_done(KEYS[4], ARGV[7])
  local status = redis.call('HGET', KEYS[4], 'status')
  finished = status == 'completed' or status == 'cancelled'
  if finished and ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
end
if finished and ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
"
    };
}

/// [`store_result_lua`] with the document in ARGV[1]. Returns 0 (already stored), 1, or 2
/// when this result completed its job.
const RESULT_SCRIPT: &str = concat!(
    completion_rule_lua!(),
    "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end\nlocal doc = ARGV[1]\n",
    store_result_lua!(),
    "if completed_now then return 2 end\nreturn 1\n"
);

/// A task is done, in one step: its result (when it has one, and only the first time) gets
/// the next sequence id and is stored as [`RESULT_SCRIPT`] does, then the stream entry is acked
/// and deleted. KEYS: results list, by-task key, by-job list, job hash, stats hash, sequence
/// key, stream, dead-letter list. ARGV: document without its id (a JSON object, or empty for
/// no result), retain, verdict counter, succeeded, scan µs, file size, now, retention ms,
/// group, entry id, dead letter (or empty). A dead letter is pushed in the same step, and only
/// while the entry is still this delivery's (else nothing is written).
/// Returns {result id or 0, 1 when the job completed now}.
const COMPLETE_SCRIPT: &str = concat!(
    completion_rule_lua!(),
    "local id = 0\nlocal completed = 0\nlocal dead = ARGV[11]\n",
    "if dead ~= '' and redis.call('XACK', KEYS[7], ARGV[9], ARGV[10]) == 0 then return {0, 0} end\n",
    "if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then\n",
    "id = redis.call('INCR', KEYS[6])\n",
    "local doc = '{\"id\":' .. id .. ',' .. string.sub(ARGV[1], 2)\n",
    store_result_lua!(),
    "if completed_now then completed = 1 end\nend\n",
    "if dead == '' then redis.call('XACK', KEYS[7], ARGV[9], ARGV[10]) end\n",
    "redis.call('XDEL', KEYS[7], ARGV[10])\n",
    "if dead ~= '' then redis.call('RPUSH', KEYS[8], dead) end\n",
    "return {id, completed}\n"
);

/// Retention for a chunk of a finished job's results: the by-task key of every row in
/// `start..start+count` of the by-job list expires with the job. KEYS: by-job list.
/// ARGV: start, count, by-task key prefix, ttl ms. Returns how many rows it saw.
const EXPIRE_TASKS_SCRIPT: &str = r"
local rows = redis.call('LRANGE', KEYS[1], ARGV[1], tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1)
for _, row in ipairs(rows) do
  local ok, doc = pcall(cjson.decode, row)
  if ok and type(doc) == 'table' and type(doc['scan_request_task_id']) == 'string' then
    redis.call('PEXPIRE', ARGV[3] .. doc['scan_request_task_id'], ARGV[4])
  end
end
return #rows
";

/// Rows per [`EXPIRE_TASKS_SCRIPT`] call: a large job's retention is applied in short steps,
/// never one long script that blocks Redis.
const EXPIRE_CHUNK: usize = 500;

/// Requeue one dead letter (same task id), replacing its failed outcome: its stored result
/// leaves the by-task key, the by-job list and the newest-results list, and its job counts it
/// as open again (a job completed because of it runs again and loses its retention TTL).
/// KEYS: dead-letter list, stream, results list, by-task key, by-job list, job hash.
/// ARGV: the letter as stored, the task json, now. Returns 1 when this call took the letter.
const REQUEUE_SCRIPT: &str = r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
local row = redis.call('GET', KEYS[4])
if row then
  redis.call('DEL', KEYS[4])
  redis.call('LREM', KEYS[5], 1, row)
  redis.call('LREM', KEYS[3], 1, row)
  if redis.call('EXISTS', KEYS[6]) == 1 then
    local processed = redis.call('HINCRBY', KEYS[6], 'processed_count', -1)
    if processed < 0 then
      processed = 0
      redis.call('HSET', KEYS[6], 'processed_count', 0)
    end
    if redis.call('HINCRBY', KEYS[6], 'failed_count', -1) < 0 then
      redis.call('HSET', KEYS[6], 'failed_count', 0)
    end
    redis.call('HSET', KEYS[6], 'updated_at', ARGV[3])
    local enqueued = tonumber(redis.call('HGET', KEYS[6], 'enqueued_count') or '0')
    if redis.call('HGET', KEYS[6], 'status') == 'completed' and processed < enqueued then
      redis.call('HSET', KEYS[6], 'status', 'running')
      redis.call('HDEL', KEYS[6], 'completed_at')
      redis.call('PERSIST', KEYS[6])
      redis.call('PERSIST', KEYS[5])
    end
  end
end
redis.call('XADD', KEYS[2], '*', 'task', ARGV[2], 'attempt', 1)
return 1
";

/// One job's results out of the newest-results list, the by-task index and the by-job list,
/// atomically. KEYS: results list, by-job list. ARGV: by-task key prefix. Returns how many.
const CLEAR_JOB_RESULTS_SCRIPT: &str = r"
local rows = redis.call('LRANGE', KEYS[2], 0, -1)
for _, row in ipairs(rows) do
  redis.call('LREM', KEYS[1], 0, row)
  local ok, doc = pcall(cjson.decode, row)
  if ok and type(doc) == 'table' and type(doc['scan_request_task_id']) == 'string' then
    redis.call('DEL', ARGV[1] .. doc['scan_request_task_id'])
  end
end
redis.call('DEL', KEYS[2])
return #rows
";

/// A counting semaphore with expiring holders. KEYS: slot set. ARGV: now ms, max, slot, expiry ms.
const SLOT_SCRIPT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  return 1
end
return 0
";

/// Take several slots in order, stopping at the cap. KEYS: slot set. ARGV: now ms, max,
/// expiry ms, slots… Returns how many of the slots (the first ones) are held.
const SLOTS_SCRIPT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local taken = 0
for i = 4, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return taken end
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[i])
  end
  taken = taken + 1
end
return taken
";

/// Heartbeat for slots. KEYS: slot set. ARGV: now ms, new expiry ms, slots…
/// Returns the slots that were no longer held (expired and removed, or released).
const RENEW_SLOTS_SCRIPT: &str = r"
local lost = {}
for i = 3, #ARGV do
  local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if until_ms and tonumber(until_ms) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
";

/// Heartbeat for leased tasks: reset the idle time of every entry still pending for this
/// consumer (`XCLAIM … JUSTID` does not count a delivery). KEYS: stream. ARGV: group, consumer,
/// entry ids…. Returns the ids no longer pending for this consumer.
const RENEW_SCANS_SCRIPT: &str = r"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
";

/// Consumer group shared by every worker replica.
const GROUP: &str = "dsx-connect-workers";

/// Revocation as one atomic step. KEYS: config hash, grace-kid set.
/// ARGV: uuid, kid index prefix, grace record prefix. Returns how many keys it removed.
const REVOKE_SCRIPT: &str = r"
local removed = 0
local function drop_kid(kid)
  if redis.call('GET', ARGV[2] .. kid) == ARGV[1] then
    removed = removed + redis.call('DEL', ARGV[2] .. kid)
  end
end
local current = redis.call('HGET', KEYS[1], 'hmac_key_id')
if current then
  drop_kid(current)
end
for _, kid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  drop_kid(kid)
  redis.call('DEL', ARGV[3] .. kid)
end
redis.call('DEL', KEYS[2])
removed = removed + redis.call('DEL', KEYS[1])
return removed
";

/// Job counters, in the layout Python components read.
/// Queue a group of intakes, each all-or-nothing and answered alone, in order (a later one
/// sees what an earlier one wrote). One script, so the group runs whole or not at all: a
/// `NOSCRIPT` retry can never queue anything twice.
/// KEYS: the stream, then per intake its job hashes, its intake key (when its TTL is set)
/// and its nonce key (when its TTL is set).
/// ARGV: now, intake count, then per intake: job count, intake TTL ms, nonce TTL ms, task
/// count, (job id, owner, item count) per job, the task payloads.
/// Answers one array per intake: `{"ok"}`, `{"repeat"}`, `{"replayed"}` (the nonce is kept:
/// replays stay refused), `{reason, job_id}` with nothing queued, or `{"error", message}` when
/// a command failed (a key of the wrong type): every check reads before anything is written,
/// so a failed intake queued nothing, and the others of the group are unaffected.
const ENQUEUE_SCRIPT: &str = r#"
local now = ARGV[1]
local function enqueue(k, a, jobs, intake_ttl, nonce_ttl, tasks)
  local intake, nonce = nil, nil
  if intake_ttl > 0 then intake = KEYS[k + jobs] end
  if nonce_ttl > 0 then nonce = KEYS[k + jobs + (intake and 1 or 0)] end
  if nonce and not redis.call('SET', nonce, '1', 'NX', 'PX', nonce_ttl) then return {'replayed'} end
  if intake and redis.call('EXISTS', intake) == 1 then return {'repeat'} end
  for j = 0, jobs - 1 do
    local key, job_id, owner = KEYS[k + j], ARGV[a + 3 * j], ARGV[a + 3 * j + 1]
    local current = redis.call('HGET', key, 'connector_uuid')
    if current and current ~= owner then return {'other_owner', job_id} end
    local status = redis.call('HGET', key, 'status')
    if status == 'paused' or redis.call('HGET', key, 'paused') == '1' then return {'paused', job_id} end
    if status == 'cancelled' or redis.call('HGET', key, 'cancel') == '1' then return {'cancelled', job_id} end
  end
  for j = 0, jobs - 1 do
    local key, job_id, owner, count = KEYS[k + j], ARGV[a + 3 * j], ARGV[a + 3 * j + 1], ARGV[a + 3 * j + 2]
    redis.call('HSETNX', key, 'job_id', job_id)
    redis.call('HSETNX', key, 'connector_uuid', owner)
    redis.call('HSETNX', key, 'status', 'running')
    redis.call('HSETNX', key, 'created_at', now)
    redis.call('HINCRBY', key, 'enqueued_count', count)
    redis.call('HSET', key, 'updated_at', now)
  end
  for i = a + 3 * jobs, a + 3 * jobs + tasks - 1 do
    redis.call('XADD', KEYS[1], '*', 'task', ARGV[i])
  end
  if intake then redis.call('SET', intake, '1', 'PX', intake_ttl) end
  return {'ok'}
end
local answers = {}
local k, a = 2, 3
for n = 1, tonumber(ARGV[2]) do
  local jobs, intake_ttl, nonce_ttl, tasks = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local ok, answer = pcall(enqueue, k, a + 4, jobs, intake_ttl, nonce_ttl, tasks)
  if not ok then answer = {'error', type(answer) == 'table' and answer.err or tostring(answer)} end
  answers[n] = answer
  k = k + jobs + (intake_ttl > 0 and 1 or 0) + (nonce_ttl > 0 and 1 or 0)
  a = a + 4 + 3 * jobs + tasks
end
return answers
"#;

/// Create a job for its connector, or confirm the owner. KEYS[1] the job hash; ARGV job id,
/// owner, now.
const CLAIM_JOB_SCRIPT: &str = r#"
local current = redis.call('HGET', KEYS[1], 'connector_uuid')
if current and current ~= ARGV[2] then return {'other_owner', ARGV[1]} end
redis.call('HSETNX', KEYS[1], 'job_id', ARGV[1])
redis.call('HSETNX', KEYS[1], 'connector_uuid', ARGV[2])
redis.call('HSETNX', KEYS[1], 'status', 'running')
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[3])
redis.call('HSETNX', KEYS[1], 'enqueued_count', 0)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return {'ok'}
"#;

/// A script's `{"ok"}` or `{reason, job_id}`.
fn refusal(answer: &[String]) -> Result<(), JobRefusal> {
    let job_id = answer.get(1).cloned().unwrap_or_default();
    match answer.first().map(String::as_str) {
        Some("other_owner") => Err(JobRefusal::OtherOwner { job_id }),
        Some("paused") => Err(JobRefusal::Paused { job_id }),
        Some("cancelled") => Err(JobRefusal::Cancelled { job_id }),
        _ => Ok(()),
    }
}

/// The index Python components use to find a key's connector.
/// key id → (owner uuid, sealed secret): the current key from the owner's config hash, else
/// a key in its grace period. KEYS: kid index, grace key. ARGV: config key prefix, key id.
const RESOLVE_SCRIPT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if not owner then return false end
local fields = redis.call('HMGET', ARGV[1] .. owner, 'hmac_key_id', 'hmac_secret')
if fields[1] == ARGV[2] and fields[2] then return {owner, fields[2]} end
local grace = redis.call('GET', KEYS[2])
if grace then return {owner, grace} end
return false
"#;

impl RedisStore {
    /// A store for `url`. Connects lazily: a server started while Redis is down comes up
    /// (not ready) and recovers when Redis returns. Errors only on an invalid URL.
    pub fn new(url: &str, ns: Namespace, codec: SecretCodec) -> StoreResult<Self> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            client,
            conn: tokio::sync::OnceCell::new(),
            blocking: tokio::sync::Mutex::new(None),
            listeners: Default::default(),
            round_trips: Default::default(),
            keys: keys::Keys::new(&ns.env),
            codec,
            job_retention_ms: ttl_ms(crate::DEFAULT_JOB_RETENTION),
        })
    }

    /// Keep finished jobs, their result lists and their results' by-task keys this long after
    /// the job's last change (a key TTL set when the job finishes); `None` keeps them forever.
    pub fn with_job_retention(mut self, retention: Option<Duration>) -> Self {
        self.job_retention_ms = retention.filter(|r| !r.is_zero()).map(ttl_ms).unwrap_or(0);
        self
    }

    /// A job finished (or lost its record): its hash (when `with_job` and it still exists),
    /// its result list and every by-task key of its results expire after the retention.
    async fn expire_job_results(&self, job_id: &str, with_job: bool) -> StoreResult<()> {
        let ttl = self.job_retention_ms;
        if ttl == 0 {
            return Ok(());
        }
        let list = self.keys.job_results(job_id);
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("PEXPIRE").arg(&list).arg(ttl).ignore();
        if with_job {
            pipe.cmd("PEXPIRE").arg(self.keys.job(job_id)).arg(ttl).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(map_err)?;
        let mut start = 0;
        loop {
            let seen: usize = scripts::EXPIRE_TASKS
                .key(&list)
                .arg(start)
                .arg(EXPIRE_CHUNK)
                .arg(self.keys.result_by_task(""))
                .arg(ttl)
                .invoke_async(&mut conn)
                .await
                .map_err(map_err)?;
            if seen < EXPIRE_CHUNK {
                return Ok(());
            }
            start += EXPIRE_CHUNK;
        }
    }

    /// `cmd`, an `EVALSHA` of `script` written by the caller, with one `SCRIPT LOAD` and a
    /// retry when Redis does not know the script yet (a restart or `SCRIPT FLUSH`). Redis
    /// refuses an unknown script before running any of it, so the retry cannot repeat work.
    async fn eval<T: redis::FromRedisValue>(&self, script: &redis::Script, cmd: &redis::Cmd) -> StoreResult<T> {
        let mut conn = self.conn().await?;
        match cmd.query_async(&mut conn).await {
            Err(err) if err.kind() == ErrorKind::NoScriptError => {
                script.prepare_invoke().load_async(&mut conn).await.map_err(map_err)?;
                cmd.query_async(&mut conn).await.map_err(map_err)
            }
            answer => answer.map_err(map_err),
        }
    }

    /// The shared connection, created on first use. Waiting for the lock counts against the
    /// connect timeout too, so callers queued behind a slow connect still fail fast.
    async fn conn(&self) -> StoreResult<ConnectionManager> {
        // Every caller sends one request (a command, a pipeline or a script) per connection
        // it asks for on the hot path.
        self.round_trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Connected once, the manager reconnects by itself: the hot path is a clone.
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let connect = self.conn.get_or_try_init(|| async {
            // No retries inside the manager: one attempt per request keeps failures quick, and
            // the manager starts a fresh attempt after every IO error.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(RESPONSE_TIMEOUT)
                .set_number_of_retries(0);
            ConnectionManager::new_with_config(self.client.clone(), config).await.map_err(map_err)
        });
        // Waiting behind another caller's connect counts against the timeout too.
        tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_millis(500), connect)
            .await
            .map_err(|_| StoreError::Unavailable("timed out connecting to Redis".into()))?
            .cloned()
    }

    /// Every key matching `pattern`, via SCAN (never KEYS, which blocks Redis).
    async fn scan_keys(&self, pattern: &str) -> StoreResult<Vec<String>> {
        let mut conn = self.conn().await?;
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(map_err)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Block on the queue's own connection until an entry is added to the stream, or for
    /// `wait` at most (`XREAD BLOCK … $`: it reads nothing the group has not seen, it only
    /// wakes the caller).
    async fn wait_on_stream(&self, wait: Duration) -> StoreResult<()> {
        let wait = wait.min(MAX_BLOCK);
        let mut slot = self.blocking.lock().await;
        if slot.is_none() {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(MAX_BLOCK + RESPONSE_TIMEOUT);
            *slot = Some(self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(map_err)?);
        }
        let conn = slot.as_mut().expect("connection made above");
        self.round_trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let read: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(self.keys.scan_queue())
            .arg("$")
            .query_async(conn)
            .await;
        if let Err(err) = read {
            *slot = None;
            return Err(map_err(err));
        }
        Ok(())
    }

    /// One claimed entry of [`CLAIM_SCRIPT`]'s reply.
    fn delivery(fields: &[redis::Value]) -> StoreResult<Delivery> {
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::Int(i) => i.to_string(),
            _ => String::new(),
        };
        let [id, task, attempt, status, has_result] = fields else {
            return Err(corrupt("claim reply of the wrong shape"));
        };
        let id = text(id);
        let task: QueuedTask = serde_json::from_str(&text(task))
            .map_err(|e| corrupt(format!("queue entry {id} holds no readable task: {e}")))?;
        let job_status = match text(status).as_str() {
            "" => None,
            other => Some(
                serde_json::from_value(serde_json::Value::String(other.to_owned()))
                    .map_err(|_| corrupt(format!("job {} has status {other:?}", task.job_id)))?,
            ),
        };
        Ok(Delivery {
            id,
            task,
            attempt: text(attempt).parse().unwrap_or(1),
            job_status,
            has_result: text(has_result) == "1",
            claimed_at_us: crate::now_micros(),
        })
    }

    async fn settle(&self, delivery: &Delivery, mode: &str, score: u64, member: String) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        scripts::SETTLE
            .key(self.keys.scan_queue())
            .key(self.keys.delayed())
            .arg(GROUP)
            .arg(&delivery.id)
            .arg(mode)
            .arg(score)
            .arg(member)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

/// Every script, its SHA-1 computed once: `Script::new` hashes the source, and doing that
/// on each call showed in the intake profile.
mod scripts {
    use std::sync::LazyLock;

    use redis::Script;

    macro_rules! lua {
        ($($name:ident = $source:ident),* $(,)?) => {
            $(pub(super) static $name: LazyLock<Script> = LazyLock::new(|| Script::new(super::$source));)*
        };
    }

    lua! {
        RESOLVE = RESOLVE_SCRIPT,
        CLAIM_JOB = CLAIM_JOB_SCRIPT,
        ENQUEUE_DONE = ENQUEUE_DONE_SCRIPT,
        JOB_STATUS = JOB_STATUS_SCRIPT,
        SLOT = SLOT_SCRIPT,
        SLOTS = SLOTS_SCRIPT,
        RENEW_SLOTS = RENEW_SLOTS_SCRIPT,
        EXPIRE_TASKS = EXPIRE_TASKS_SCRIPT,
        SETTLE = SETTLE_SCRIPT,
        ENQUEUE = ENQUEUE_SCRIPT,
        CLAIM = CLAIM_SCRIPT,
        RENEW_SCANS = RENEW_SCANS_SCRIPT,
        REQUEUE = REQUEUE_SCRIPT,
        COMPLETE = COMPLETE_SCRIPT,
        RESULT = RESULT_SCRIPT,
        CLEAR_JOB_RESULTS = CLEAR_JOB_RESULTS_SCRIPT,
    }
}
