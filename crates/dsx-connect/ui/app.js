// dsx-connect operator UI: plain browser JavaScript, no build step.
//
// Served under a strict Content-Security-Policy (no inline script or style). Every string that
// comes from the API (connector names, assets, file paths, verdict details) is written with
// textContent or as an attribute value, never parsed as HTML: connectors choose their own names
// and files their own paths, so any of them may carry markup.
'use strict';

(() => {
  const API = 'dsx-connect/api/v1/'; // relative: works behind a proxy that adds a path prefix
  const TOKEN_KEY = 'dsx-connect.operator-token';
  const REFRESH_MS = 2000;
  const MAX_RESULTS = 500;
  const STREAM_BACKOFF_MIN_MS = 1000;
  const STREAM_BACKOFF_MAX_MS = 30000;
  // The server sends a heartbeat every 15 s; silence for longer means a dead connection.
  const STREAM_IDLE_MS = 45000;

  const $ = (id) => document.getElementById(id);

  const state = {
    authEnabled: false,
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    // Bumped on every sign-in and sign-out: loops started by an older session stop by themselves.
    session: 0,
    stream: null, // AbortController of the live results request
    connectors: new Map(), // uuid -> connector, to name connectors in the jobs table
    jobs: new Map(), // job id -> job
    results: new Map(), // task id -> result
    renderTimer: null,
    refreshFailed: false,
  };

  class Unauthorized extends Error {}

  // ---------------------------------------------------------------- API

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (!headers.has('Accept')) headers.set('Accept', 'application/json');
    if (state.token) headers.set('Authorization', 'Bearer ' + state.token);
    const resp = await fetch(API + path, { ...options, headers, cache: 'no-store', credentials: 'omit' });
    if (resp.status === 401) throw new Unauthorized(await errorDetail(resp));
    if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status} ${await errorDetail(resp)}`);
    return resp;
  }

  async function apiJson(path, options) {
    return (await api(path, options)).json();
  }

  // The API's errors are {"detail": "code"} (or a list of field errors for 422).
  async function errorDetail(resp) {
    try {
      const body = await resp.json();
      return typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail ?? body);
    } catch {
      return resp.statusText;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---------------------------------------------------------------- start, sign-in, sign-out

  async function start() {
    let config;
    try {
      config = await apiJson('config'); // open: tells whether a token is needed
    } catch (err) {
      showNotice(`Cannot reach dsx-connect (${err.message}); retrying…`, 'error');
      setTimeout(start, 5000);
      return;
    }
    state.authEnabled = Boolean(config.auth && config.auth.enabled);
    showServerInfo(config);
    if (state.authEnabled && !state.token) {
      showLogin('');
    } else {
      enter();
    }
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token-input').value = '';
    enter();
  }

  // Check the token with a first refresh, then show the dashboard and start the live feeds.
  async function enter() {
    const session = ++state.session;
    $('token-submit').disabled = true;
    try {
      await refresh();
    } catch (err) {
      if (session !== state.session) return;
      handleError(err);
      // Not a token problem (the server restarting, a proxy error): try again shortly.
      if (!(err instanceof Unauthorized)) {
        setTimeout(() => session === state.session && enter(), 5000);
      }
      return;
    } finally {
      $('token-submit').disabled = false;
    }
    if (session !== state.session) return;
    $('login-panel').hidden = true;
    $('token-error').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = !state.authEnabled;
    if (state.authEnabled) apiJson('config').then(showServerInfo, () => {}); // the full view needs the token
    streamLoop(session);
    refreshLoop(session);
  }

  function stopSession() {
    state.session++;
    if (state.stream) state.stream.abort();
    setLive('off');
  }

  function signOut(message) {
    stopSession();
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }

  function showLogin(message) {
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('login-panel').hidden = false;
    const error = $('token-error');
    error.textContent = message;
    error.hidden = !message;
    $('token-input').focus();
  }

  // A 401 means the token is wrong or was revoked: ask again. Anything else is shown and retried.
  function handleError(err, context) {
    if (err instanceof Unauthorized) {
      signOut(`The server rejected the operator token (${err.message}). Enter a valid token.`);
      return;
    }
    showNotice(context ? `${context}: ${err.message}` : err.message, 'error');
  }

  function showServerInfo(config) {
    const parts = [`v${config.version || '?'}`];
    if (config.store) parts.push(`store: ${config.store}`);
    if (config.scanner && config.scanner.kind) parts.push(`scanner: ${config.scanner.kind}`);
    parts.push(config.auth && config.auth.enabled ? 'auth on' : 'auth off');
    $('server-info').textContent = parts.join(' · ');
  }

  function showNotice(text, kind, jobId) {
    const notice = $('notice');
    notice.textContent = text;
    notice.className = `notice notice-${kind}`;
    if (jobId) notice.dataset.jobId = jobId;
    else delete notice.dataset.jobId;
    notice.hidden = false;
  }

  // ---------------------------------------------------------------- periodic refresh

  async function refreshLoop(session) {
    for (;;) {
      await sleep(REFRESH_MS);
      if (session !== state.session) return;
      try {
        await refresh();
        if (state.refreshFailed) $('notice').hidden = true;
        state.refreshFailed = false;
      } catch (err) {
        if (session !== state.session) return;
        state.refreshFailed = !(err instanceof Unauthorized);
        handleError(err);
      }
    }
  }

  async function refresh() {
    const [connectors, jobs, stats, deadLetters] = await Promise.all([
      apiJson('connectors/list'),
      apiJson('scan/jobs'),
      apiJson('scan/stats'),
      apiJson('admin/dead-letter/stats'),
    ]);
    state.connectors = new Map(connectors.map((c) => [c.uuid, c]));
    state.jobs = new Map(jobs.map((j) => [j.job_id, j]));
    renderConnectors();
    renderJobs();
    renderStats(stats);
    const items = deadLetters.scan_request > 0
      ? (await apiJson('admin/dead-letter/items/scan_request?start=0&end=50')).items
      : [];
    renderDeadLetters(deadLetters, items);
  }

  // ---------------------------------------------------------------- live results (SSE over fetch)

  // EventSource cannot send an Authorization header, so the stream is read with fetch and its
  // frames are parsed here. It reconnects with a growing delay when it drops.
  async function streamLoop(session) {
    let backoff = STREAM_BACKOFF_MIN_MS;
    while (session === state.session) {
      const ctrl = new AbortController();
      state.stream = ctrl;
      setLive(backoff === STREAM_BACKOFF_MIN_MS ? 'connecting' : 'reconnecting');
      try {
        const resp = await api('subscribe/scan-result', {
          signal: ctrl.signal,
          headers: { Accept: 'text/event-stream' },
        });
        setLive('live');
        backoff = STREAM_BACKOFF_MIN_MS;
        // Subscribed first, then catch up: nothing stored in between is missed.
        loadResults().catch((err) => handleError(err, 'Loading results'));
        await readEvents(resp.body, ctrl, onStreamData);
      } catch (err) {
        if (session !== state.session) return;
        if (err instanceof Unauthorized) {
          handleError(err);
          return;
        }
      }
      if (session !== state.session) return;
      setLive('reconnecting');
      await sleep(backoff);
      backoff = Math.min(backoff * 2, STREAM_BACKOFF_MAX_MS);
    }
  }

  // Parse `text/event-stream`: `data:` lines joined by newlines, an event ends at a blank line,
  // lines starting with `:` are comments (the server's idle heartbeat).
  async function readEvents(body, ctrl, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let data = [];
    let idle = setTimeout(() => ctrl.abort(), STREAM_IDLE_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(idle);
        idle = setTimeout(() => ctrl.abort(), STREAM_IDLE_MS);
        buffer += decoder.decode(value, { stream: true });
        // A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
        const held = buffer.endsWith('\r') ? '\r' : '';
        const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
        buffer = lines.pop() + held; // the unterminated rest
        for (const line of lines) {
          if (line === '') {
            if (data.length) onData(data.join('\n'));
            data = [];
          } else if (!line.startsWith(':')) {
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            let text = colon < 0 ? '' : line.slice(colon + 1);
            if (text.startsWith(' ')) text = text.slice(1);
            if (field === 'data') data.push(text); // `event`, `id`, `retry`: unused by this stream
          }
        }
      }
    } finally {
      clearTimeout(idle);
    }
  }

  function onStreamData(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    if (event.type !== 'scan_result' || !event.scan_result) return;
    addResults([event.scan_result]);
    // The event carries the job's counters: progress moves between two refreshes.
    if (event.job && event.job.job_id) {
      state.jobs.set(event.job.job_id, event.job);
      scheduleRender();
    }
  }

  async function loadResults() {
    addResults(await apiJson(`scan/results?limit=${MAX_RESULTS}`));
  }

  function addResults(results) {
    for (const r of results) {
      const key = r.scan_request_task_id || String(r.id);
      state.results.set(key, r);
    }
    if (state.results.size > MAX_RESULTS) {
      const oldest = [...state.results.entries()].sort((a, b) => (a[1].id || 0) - (b[1].id || 0));
      for (const [key] of oldest.slice(0, state.results.size - MAX_RESULTS)) state.results.delete(key);
    }
    scheduleRender();
  }

  // A burst of events renders once.
  function scheduleRender() {
    if (state.renderTimer) return;
    state.renderTimer = setTimeout(() => {
      state.renderTimer = null;
      renderResults();
      renderJobs();
    }, 100);
  }

  function setLive(which) {
    const badge = $('live-status');
    badge.dataset.state = which;
    badge.textContent = { off: 'offline', connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' }[which];
  }

  // ---------------------------------------------------------------- DOM helpers

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === 'text') node.textContent = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function setText(node, text) {
    const value = text === null || text === undefined || text === '' ? '—' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  // Update a table in place, one row per item: rows (and the buttons in them) survive refreshes,
  // so a click never lands on a row that was just replaced. `build` makes a new row's cells once,
  // `fill` writes the item into them.
  function syncRows(table, items, keyOf, build, fill) {
    const tbody = table.tBodies[0];
    const old = new Map([...tbody.rows].map((tr) => [tr.dataset.key, tr]));
    let cursor = tbody.firstElementChild;
    for (const item of items) {
      const key = String(keyOf(item));
      let tr = old.get(key);
      if (tr) {
        old.delete(key);
      } else {
        tr = el('tr', { dataset: { key } });
        build(tr);
      }
      fill(tr, item);
      if (tr === cursor) cursor = cursor.nextElementSibling;
      else tbody.insertBefore(tr, cursor);
    }
    for (const tr of old.values()) tr.remove();
    $(`${table.id}-empty`).hidden = items.length > 0;
  }

  // Class names from a fixed list only: the value itself comes from the server.
  function badgeClass(prefix, value, known) {
    const v = String(value || '').toLowerCase().replace(/\s+/g, '-');
    return `badge ${prefix}-${known.includes(v) ? v : 'other'}`;
  }

  function fmtTime(unixSeconds) {
    if (!unixSeconds) return '—';
    const d = new Date(unixSeconds * 1000);
    return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function fmtAgo(unixSeconds) {
    if (!unixSeconds) return '—';
    const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return fmtTime(unixSeconds);
  }

  const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString() : '—');
  const shortId = (id) => (id && id.length > 13 ? `${id.slice(0, 8)}…` : id || '');

  function connectorLabel(uuid) {
    const c = state.connectors.get(uuid);
    return c ? c.display_name || c.name : uuid;
  }

  // ---------------------------------------------------------------- connectors

  function renderConnectors() {
    const label = (c) => String(c.display_name || c.name || '');
    const rows = [...state.connectors.values()].sort((a, b) => label(a).localeCompare(label(b)));
    syncRows($('connectors'), rows, (c) => c.uuid, buildConnectorRow, fillConnectorRow);
  }

  function buildConnectorRow(tr) {
    const button = el('button', { type: 'button', class: 'full-scan', 'data-testid': 'full-scan', text: 'Full scan' });
    button.addEventListener('click', () => fullScan(tr.dataset.uuid, button));
    tr.append(
      el('td', { class: 'name' }, [el('span', { class: 'display-name' }), el('div', { class: 'sub mono' })]),
      el('td', { class: 'status' }, [el('span')]),
      el('td', { class: 'asset' }),
      el('td', { class: 'filter mono' }),
      el('td', { class: 'item-action' }),
      el('td', { class: 'heartbeat' }),
      el('td', { class: 'url mono' }),
      el('td', { class: 'actions' }, [button]),
    );
  }

  function fillConnectorRow(tr, c) {
    const [name, status, asset, filter, action, heartbeat, url, actions] = tr.cells;
    tr.dataset.uuid = c.uuid;
    actions.firstChild.dataset.uuid = c.uuid;
    setText(name.firstChild, c.display_name || c.name);
    setText(name.lastChild, `${c.name} · ${c.uuid}`);
    const badge = status.firstChild;
    badge.className = badgeClass('status', c.status, ['ready', 'starting', 'stopped', 'failed']);
    setText(badge, c.status);
    setText(asset, c.asset_display_name || c.asset);
    asset.title = c.asset || '';
    setText(filter, c.filter);
    const move = (c.item_action === 'move' || c.item_action === 'movetag') && c.item_action_move_metainfo;
    setText(action, move ? `${c.item_action} → ${c.item_action_move_metainfo}` : c.item_action);
    const auth = c.auth || {};
    setText(heartbeat, fmtAgo(auth.last_registered_at));
    heartbeat.title = auth.last_registered_at
      ? `${new Date(auth.last_registered_at * 1000).toLocaleString()} via ${auth.registered_via || '?'}`
      : '';
    setText(url, c.url);
  }

  async function fullScan(uuid, button) {
    button.disabled = true;
    try {
      const resp = await api(`connectors/full_scan/${encodeURIComponent(uuid)}`, { method: 'POST' });
      const body = await resp.json().catch(() => null);
      const jobId = resp.headers.get('X-Job-Id') || (body && body.id) || '';
      showNotice(`Full scan started on ${connectorLabel(uuid)}: job ${jobId}`, 'info', jobId);
      state.refreshFailed = false;
    } catch (err) {
      handleError(err, 'Full scan');
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- jobs

  function renderJobs() {
    const rows = [...state.jobs.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
    syncRows($('jobs'), rows, (j) => j.job_id, buildJobRow, fillJobRow);
  }

  function buildJobRow(tr) {
    const buttons = ['pause', 'resume', 'cancel'].map((action) => {
      const button = el('button', { type: 'button', class: `job-${action}`, 'data-testid': `job-${action}` });
      button.textContent = action[0].toUpperCase() + action.slice(1);
      button.addEventListener('click', () => jobAction(tr.dataset.jobId, action, button));
      return button;
    });
    tr.append(
      el('td', { class: 'job-id mono' }),
      el('td', { class: 'connector' }),
      el('td', { class: 'status' }, [el('span')]),
      el('td', { class: 'progress' }, [el('progress', { max: '1', value: '0' }), el('span', { class: 'count' })]),
      el('td', { class: 'outcome' }),
      el('td', { class: 'updated' }),
      el('td', { class: 'actions' }, buttons),
    );
  }

  function fillJobRow(tr, job) {
    const [id, connector, status, progress, outcome, updated, actions] = tr.cells;
    tr.dataset.jobId = job.job_id;
    tr.dataset.status = job.status;
    setText(id, shortId(job.job_id));
    id.title = job.job_id;
    setText(connector, job.connector_uuid ? connectorLabel(job.connector_uuid) : '');
    const badge = status.firstChild;
    badge.className = badgeClass('job', job.status, ['running', 'paused', 'cancelled', 'completed']);
    setText(badge, job.status);
    // The total is the connector's own count once it sent enqueue_done; until then, what arrived so far.
    const total = Math.max(job.expected_total || 0, job.enqueued_count || 0);
    const bar = progress.firstChild;
    bar.max = Math.max(total, 1);
    bar.value = Math.min(job.processed_count || 0, bar.max);
    setText(progress.lastChild, `${fmtNum(job.processed_count)} / ${fmtNum(total)}${job.enqueue_done ? '' : ' (enqueuing)'}`);
    setText(outcome, `${fmtNum(job.succeeded_count)} / ${fmtNum(job.failed_count)}`);
    setText(updated, fmtTime(job.updated_at));
    const [pause, resume, cancel] = actions.children;
    pause.disabled = job.status !== 'running';
    resume.disabled = job.status !== 'paused';
    cancel.disabled = job.status !== 'running' && job.status !== 'paused';
  }

  async function jobAction(jobId, action, button) {
    button.disabled = true;
    try {
      await api(`scan/jobs/${encodeURIComponent(jobId)}/${action}`, { method: 'POST' });
      const job = await apiJson(`scan/jobs/${encodeURIComponent(jobId)}`);
      state.jobs.set(job.job_id, job);
      renderJobs();
    } catch (err) {
      handleError(err, `${action} job ${jobId}`);
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- results

  const VERDICTS = ['benign', 'malicious', 'unknown', 'unsupported-file-type', 'not-scanned', 'non-compliant'];

  function renderResults() {
    const rows = [...state.results.values()].sort((a, b) => (b.id || 0) - (a.id || 0));
    syncRows($('results'), rows, (r) => r.scan_request_task_id || r.id, buildResultRow, fillResultRow);
  }

  function buildResultRow(tr) {
    tr.append(
      el('td', { class: 'seq' }),
      el('td', { class: 'finished' }),
      el('td', { class: 'verdict' }, [el('span')]),
      el('td', { class: 'threat' }),
      el('td', { class: 'location mono' }),
      el('td', { class: 'connector' }),
      el('td', { class: 'result-status' }),
      el('td', { class: 'job mono' }),
    );
  }

  function fillResultRow(tr, r) {
    const [seq, finished, verdictCell, threat, location, connector, status, job] = tr.cells;
    const request = r.scan_request || {};
    const verdict = r.verdict || {};
    const verdictName = verdict.verdict || 'Not Scanned';
    tr.dataset.jobId = r.scan_job_id || '';
    tr.dataset.verdict = verdictName;
    setText(seq, r.id);
    setText(finished, fmtTime(r.finished_at));
    const badge = verdictCell.firstChild;
    badge.className = badgeClass('verdict', verdictName, VERDICTS);
    setText(badge, verdictName);
    const details = verdict.verdict_details || {};
    setText(threat, [details.threat_type, details.reason].filter(Boolean).join(': '));
    setText(location, request.location);
    location.title = request.metainfo || '';
    const c = request.connector;
    setText(connector, c ? c.display_name || c.name : '');
    setText(status, r.status);
    setText(job, shortId(r.scan_job_id));
    job.title = r.scan_job_id || '';
  }

  // ---------------------------------------------------------------- stats and dead letters

  const STATS = [
    ['files_scanned', 'Files scanned'],
    ['benign_count', 'Benign'],
    ['malicious_count', 'Malicious'],
    ['unknown_count', 'Unknown'],
    ['unsupported_count', 'Unsupported'],
    ['not_scanned_count', 'Not scanned'],
    ['non_compliant_count', 'Non compliant'],
    ['encrypted_count', 'Encrypted'],
    ['avg_scan_time_in_microseconds', 'Avg scan time', (us) => (us < 1000 ? `${us} µs` : `${(us / 1000).toFixed(1)} ms`)],
    ['avg_file_size', 'Avg file size', (b) => `${fmtNum(b)} B`],
    ['queue_depth', 'Queued'],
    ['dead_letters', 'Dead letters'],
  ];

  function renderDefinitions(dl, entries) {
    if (!dl.children.length) {
      for (const [key, label] of entries) {
        dl.append(el('div', { class: 'stat' }, [el('dt', { text: label }), el('dd', { dataset: { stat: key } })]));
      }
    }
    for (const [key, , value] of entries) setText(dl.querySelector(`dd[data-stat="${key}"]`), value);
  }

  function renderStats(stats) {
    renderDefinitions($('stats'), STATS.map(([key, label, fmt]) => {
      const v = stats[key];
      return [key, label, typeof v === 'number' ? (fmt || fmtNum)(v) : ''];
    }));
  }

  function renderDeadLetters(counts, items) {
    const queues = [['scan_request', 'Scan requests'], ['verdict_action', 'Verdict actions'],
      ['scan_result', 'Scan results'], ['total', 'Total']];
    renderDefinitions($('dead-letters'), queues.map(([key, label]) => [key, label, fmtNum(counts[key])]));
    const table = $('dead-letter-items');
    table.hidden = items.length === 0;
    const tbody = table.tBodies[0];
    tbody.replaceChildren(...items.map((item) => {
      const task = item.task || {};
      let location = '';
      try {
        location = JSON.parse(task.payload).location;
      } catch {
        // not JSON: leave the location empty
      }
      return el('tr', {}, [
        el('td', { class: 'mono', text: shortId(task.task_id), title: task.task_id || '' }),
        el('td', { class: 'mono', text: location || '—' }),
        el('td', { text: item.reason || '—' }),
        el('td', { text: fmtNum(item.retry_count) }),
        el('td', { text: fmtTime(item.failed_at) }),
        el('td', { class: 'mono', text: shortId(task.job_id), title: task.job_id || '' }),
      ]);
    }));
  }

  $('token-form').addEventListener('submit', onTokenSubmit);
  $('sign-out').addEventListener('click', () => signOut(''));
  start();
})();
