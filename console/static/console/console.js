/**
 * The console page: wires the form and panels of console/index.html to one
 * SymphainyClient (the bundle of clients/js, docs/client.md). Everything shown comes from
 * the public API and the socket.
 */
import { ApiError, SymphainyClient } from "./symphainy-client.js";

const $ = (id) => document.getElementById(id);

/**
 * Whether the page keeps its session over a reload through the refresh cookie: the server
 * offers it (AUTH_REFRESH_COOKIE; the page's `data-refresh-cookie`) and this browser keeps a
 * Secure cookie here. Chromium and Firefox do on loopback over plain HTTP (`make run`);
 * Safari does not (WebKit bug 281149), nor does any browser on another host without TLS.
 * There a login's refresh token would go into a cookie the browser drops, and the session
 * would end at its first refresh: so the page keeps its tokens in memory instead, and a
 * reload means a new login. A script cannot set the server's HttpOnly cookie, but a Secure
 * one it sets is kept, or not, by the same rule; the probe is removed at once.
 */
function refreshCookieUsable() {
  if (document.body.dataset.refreshCookie !== "on") return false;
  const probe = "symphainy_secure_probe";
  document.cookie = `${probe}=1; Secure; SameSite=Strict; Path=/; Max-Age=10`;
  const kept = document.cookie.split("; ").includes(`${probe}=1`);
  document.cookie = `${probe}=; Secure; SameSite=Strict; Path=/; Max-Age=0`;
  return kept;
}

const client = new SymphainyClient({ refreshCookie: refreshCookieUsable() });
const MAX_LOG_ENTRIES = 60;

/** Executions this page started, by id: their last progress. */
const executions = new Map();
let currentExecution = null;
let replyMessageId = null;
/** From /api/auth/me: the tenant's display name (the login answer carries only its id). */
let tenantName = null;
/** The page's own session as /api/sessions last listed it: its idle expiry moves with use. */
let currentSessionRow = null;

// --- Small helpers --------------------------------------------------------------------

function status(text) {
  $("status").textContent = text;
}

function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** The sooner of a session's idle and absolute expiry, and which one it is. */
function nextExpiry(session) {
  const idle = session.idle_expires_at;
  const absolute = session.expires_at;
  if (idle && new Date(idle) < new Date(absolute)) return { at: idle, kind: "idle" };
  return { at: absolute, kind: "absolute" };
}

function describe(error) {
  if (error instanceof ApiError) {
    const wait = error.retryAfterS ? ` Try again in ${error.retryAfterS} s.` : "";
    return `${error.message} (${error.status || "no answer"})${wait}`;
  }
  return String(error && error.message ? error.message : error);
}

function logEvent(type, summary) {
  const list = $("event-log");
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  const name = document.createElement("code");
  name.textContent = type;
  item.append(time, " ", name, summary ? ` ${summary}` : "");
  list.prepend(item);
  while (list.children.length > MAX_LOG_ENTRIES) list.lastElementChild.remove();
}

function showApp(loggedIn) {
  $("app").hidden = !loggedIn;
  $("login-panel").hidden = loggedIn;
}

// --- Login, logout, the end of a session ----------------------------------------------

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.submitter || $("login-form").querySelector("button");
  $("login-error").textContent = "";
  button.disabled = true;
  status("Logging in…");
  try {
    await client.login($("login-email").value, $("login-password").value);
    $("login-password").value = "";
    await enter("Logged in. Opening the socket…");
  } catch (error) {
    if (!client.loggedIn) {
      $("login-error").textContent = describe(error);
      status("Not logged in.");
    }
  } finally {
    button.disabled = false;
  }
});

/** Show the session's panels, load them, and open the socket. */
async function enter(message) {
  $("login-notice").hidden = true;
  showApp(true);
  tenantName = null;
  currentSessionRow = null;
  recovery("");
  renderSession();
  status(message);
  loadMe();
  loadSessions();
  loadState();
  await client.connect();
}

/**
 * On load: back into the same session through the refresh cookie, if there is one (the
 * page hides the login form meanwhile), else the login form.
 */
async function restore() {
  if (!client.refreshCookie) {
    showApp(false);
    status("Not logged in.");
    return;
  }
  let session = null;
  try {
    session = await client.restore();
  } catch (error) {
    $("login-notice").textContent = `Could not restore the session: ${describe(error)}`;
    $("login-notice").hidden = false;
  }
  if (!session) {
    showApp(false);
    status("Not logged in.");
    return;
  }
  try {
    await enter("Session restored. Opening the socket…");
  } catch (error) {
    if (!client.loggedIn) status("Not logged in.");
  }
}

$("logout").addEventListener("click", async () => {
  try {
    await client.logout();
  } catch (error) {
    logEvent("logout", `failed: ${describe(error)}`);
  }
});

client.on("logout", () => {
  showApp(false);
  status("Logged out.");
});

function sessionLost(message) {
  return (info) => {
    showApp(false);
    status(message);
    $("login-notice").textContent = message;
    $("login-notice").hidden = false;
    logEvent("session", `${message} (${info.code}${info.reason ? ` ${info.reason}` : ""})`);
  };
}

client.on("session.ended", sessionLost("Session ended. Log in again to start a new one."));
client.on("auth.required", sessionLost("Not authenticated any more. Log in again."));
client.on("session.not_found", sessionLost("The session is gone. Log in again."));

// --- Session facts and socket state ---------------------------------------------------

function renderSession() {
  const session = client.session;
  if (!session) return;
  $("session-id").textContent = session.sessionId;
  $("session-tenant").textContent = tenantName || session.tenantId;
  $("session-tenant").title = session.tenantId;
  $("session-roles").textContent = session.roles.join(", ");
  // Until the sessions list arrives only the absolute expiry is known; the idle one
  // (usually sooner) comes with the list, and moves forward as the session is used.
  const next = currentSessionRow
    ? nextExpiry(currentSessionRow)
    : { at: session.sessionExpiresAt, kind: "absolute" };
  $("session-expires").textContent = `${when(next.at)} (${next.kind})`;
  $("token-expires").textContent = when(session.tokenExpiresAt);
}

async function loadMe() {
  try {
    const me = await client.api("GET", "/api/auth/me");
    tenantName = me.tenant_name || null;
    renderSession();
  } catch (error) {
    logEvent("me", `could not load the tenant's name: ${describe(error)}`);
  }
}

client.on("tokens", () => {
  renderSession();
  logEvent("tokens", "access token refreshed");
});

client.on("state", ({ state, code, delayMs }) => {
  const badge = $("socket-state");
  badge.dataset.state = state;
  let text = state;
  if (state === "reconnecting" && delayMs !== undefined) {
    text = `reconnecting in ${(delayMs / 1000).toFixed(1)} s (closed ${code})`;
  } else if (state === "closed" && code) {
    text = `closed (${code})`;
  }
  badge.textContent = text;
  if (state !== "open") recovery(""); // the next socket's outcome replaces the last one's
  if (state === "open") {
    status("Connected: session ready.");
    setTimeout(loadSessions, 500); // the new socket shows in its session's count
  }
  else if (state === "reconnecting") status(`Connection lost; ${text}.`);
});

client.on("session.ready", (frame) => {
  logEvent("session.ready", `session ${frame.session_id}, heartbeat ${frame.heartbeat_s} s`);
});

/** What the last reconnect recovered, beside the socket state ("" hides it). */
function recovery(text) {
  const note = $("socket-recovery");
  note.textContent = text;
  note.hidden = !text;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// After a reconnect the server either replays what the page missed (the usual handlers
// show it as it comes), or cannot: then the page re-reads what it shows over HTTP.
client.on("resumed", ({ since, seq, replayed }) => {
  const text = `resumed (${plural(replayed, "event")} replayed)`;
  recovery(text);
  status(`Reconnected: ${text}.`);
  logEvent("resumed", `from position ${since} to ${seq}, ${plural(replayed, "event")} replayed`);
});

client.on("resync.required", async ({ since, seq }) => {
  recovery("re-syncing…");
  status("Reconnected: the missed events are gone; re-reading the state…");
  logEvent("resync", `position ${since} cannot be resumed (now ${seq}): re-reading the state`);
  await Promise.all([loadState(), loadExecutions()]);
  loadSessions();
  recovery("re-synced (state re-read)");
  status("Reconnected: re-synced (state re-read).");
});
client.on("auth.refreshed", (frame) => logEvent("auth.refreshed", `token valid until ${when(frame.token_expires_at)}`));
client.on("close", ({ code, reason, retry }) => logEvent("close", `${code}${reason ? ` ${reason}` : ""}${retry ? ", will retry" : ""}`));
client.on("refresh.failed", ({ error, retryInMs }) => logEvent("refresh.failed", `${describe(error)}; again in ${retryInMs} ms`));
client.on("error", (frame) => logEvent("error", `${frame.error}: ${frame.message}`));

// --- Agent messages ---------------------------------------------------------------------

$("message-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message-text").value.trim();
  if (!text) return;
  try {
    client.sendMessage(text);
  } catch (error) {
    status(describe(error));
  }
});

// One answer on screen: the newest one, stitched by the client from its snapshot (after a
// reconnect mid-answer) and its tokens; Stop cancels it wherever it runs.
client.on("answer", (answer) => {
  if (answer.status === "streaming" && answer.messageId !== replyMessageId) {
    replyMessageId = answer.messageId;
    logEvent("agent.started", `message ${answer.messageId}`);
  }
  if (answer.messageId !== replyMessageId) return;
  const reply = $("agent-reply");
  reply.textContent = answer.text;
  const streaming = answer.status === "streaming";
  reply.setAttribute("aria-busy", String(streaming));
  $("agent-stop").disabled = !streaming;
});

client.on("agent.completed", (data) => logEvent("agent.completed", `${data.tokens} tokens`));
client.on("agent.failed", (data) => logEvent("agent.failed", `${data.reason}: ${data.error ? data.error.message : ""}`));
client.on("agent.cancelled", (data) => logEvent("agent.cancelled", `after ${data.text.length} characters`));

$("agent-stop").addEventListener("click", () => {
  if (!replyMessageId) return;
  try {
    client.cancelAnswer(replyMessageId);
  } catch (error) {
    status(describe(error));
  }
});

// --- The batch intent -------------------------------------------------------------------

$("intent-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const items = $("intent-items").value.split("\n").map((line) => line.trim()).filter(Boolean);
  const delay = Number($("intent-delay").value);
  const parameters = { items };
  if (Number.isFinite(delay)) parameters.delay_s = delay;
  currentExecution = null;
  renderProgress(null);
  try {
    client.submitIntent("batch", parameters);
    $("intent-progress-text").textContent = "Submitted…";
  } catch (error) {
    $("intent-progress-text").textContent = describe(error);
  }
});

$("intent-cancel").addEventListener("click", async () => {
  const executionId = currentExecution;
  if (!executionId) return;
  const button = $("intent-cancel");
  button.disabled = true;
  try {
    // 202: cancelled at once if it had not started, else at the handler's next progress report.
    await client.api("POST", `/api/execution/${executionId}/cancel`);
    logEvent("cancel", `requested for execution ${executionId}`);
  } catch (error) {
    logEvent("cancel", `could not cancel ${executionId}: ${describe(error)}`);
    button.disabled = false;
  }
});

client.on("intent.accepted", (frame) => {
  currentExecution = frame.execution_id;
  logEvent("intent.accepted", `execution ${frame.execution_id}`);
  renderProgress(executions.get(currentExecution) || { status: frame.status, progress: null });
});

function onExecution(type) {
  client.on(type, (data) => {
    executions.set(data.execution_id, data);
    if (type !== "execution.progress") logEvent(type, `execution ${data.execution_id}`);
    if (data.execution_id === currentExecution) renderProgress(data);
  });
}
["execution.created", "execution.started", "execution.progress", "execution.completed", "execution.failed", "execution.cancelled"]
  .forEach(onExecution);

const UNFINISHED = new Set(["created", "running"]);

/** Re-read the executions this page shows that may have moved on while it was away. */
async function loadExecutions() {
  const ids = new Set([...executions].filter(([, data]) => UNFINISHED.has(data.status)).map(([id]) => id));
  if (currentExecution) ids.add(currentExecution);
  await Promise.all([...ids].map(async (executionId) => {
    try {
      const execution = await client.api("GET", `/api/execution/${executionId}/status`);
      executions.set(executionId, execution);
      if (executionId === currentExecution) renderProgress(execution);
    } catch (error) {
      logEvent("execution", `could not re-read ${executionId}: ${describe(error)}`);
    }
  }));
}

function renderProgress(execution) {
  const bar = $("intent-progress");
  const text = $("intent-progress-text");
  const cancel = $("intent-cancel");
  const running = Boolean(execution && UNFINISHED.has(execution.status || "running"));
  if (cancel.hidden === running) cancel.disabled = false; // a new run gets a fresh button
  cancel.hidden = !running;
  if (!execution) {
    bar.value = 0;
    return;
  }
  const progress = execution.progress || {};
  const total = progress.total || 0;
  let percent = total ? Math.round((100 * (progress.processed || 0)) / total) : 0;
  if (execution.status === "completed") percent = 100;
  bar.value = percent;
  const counts = total ? ` ${progress.processed}/${total} items, ${progress.failed || 0} failed` : "";
  text.textContent = `${percent} % — ${execution.status || "running"}${counts}`;
}

// --- Session state ----------------------------------------------------------------------

async function loadState() {
  const session = client.session;
  if (!session) return;
  try {
    const state = await client.api("GET", `/api/session/${session.sessionId}/state`);
    $("state-version").textContent = String(state.version);
    $("state-data").textContent = JSON.stringify(state.data, null, 2);
  } catch (error) {
    $("state-data").textContent = `Could not load the state: ${describe(error)}`;
  }
}

$("state-reload").addEventListener("click", loadState);
client.on("session.state_changed", (data) => {
  logEvent("session.state_changed", `version ${data.version}`);
  loadState();
});

// --- The user's sessions ----------------------------------------------------------------

async function loadSessions() {
  if (!client.loggedIn) return;
  const body = $("sessions-body");
  let page;
  try {
    page = await client.api("GET", "/api/sessions?page_size=20");
  } catch (error) {
    body.replaceChildren(row([`Could not load the sessions: ${describe(error)}`]));
    return;
  }
  const current = client.session && client.session.sessionId;
  currentSessionRow = page.results.find((session) => session.session_id === current) || currentSessionRow;
  renderSession();
  body.replaceChildren(...page.results.map((session) => sessionRow(session, current)));
}

/** A table row; `optional` lists the indexes of cells a phone screen may hide. */
function row(cells, optional = []) {
  const tr = document.createElement("tr");
  cells.forEach((cell, index) => {
    const td = document.createElement("td");
    if (optional.includes(index)) td.className = "optional";
    td.append(cell);
    tr.append(td);
  });
  return tr;
}

function sessionRow(session, current) {
  const id = document.createElement("code");
  id.textContent = session.session_id.slice(0, 8);
  id.title = session.session_id;
  const label = session.session_id === current ? [id, " (this one)"] : [id];
  const idCell = document.createElement("span");
  idCell.append(...label);
  let action = "";
  if (session.status === "active") {
    action = document.createElement("button");
    action.type = "button";
    action.textContent = "End";
    action.setAttribute("aria-label", `End session ${session.session_id}`);
    action.addEventListener("click", () => endSession(session.session_id, action));
  }
  const statusText = session.end_reason ? `${session.status} (${session.end_reason})` : session.status;
  let expiry = "–";
  if (session.status === "active") {
    const next = nextExpiry(session);
    expiry = `${when(next.at)} (${next.kind})`;
  }
  return row(
    [idCell, statusText, when(session.created_at), expiry, String(session.connections), action],
    [2, 4],
  );
}

async function endSession(sessionId, button) {
  button.disabled = true;
  try {
    await client.api("DELETE", `/api/session/${sessionId}`);
    logEvent("session", `ended ${sessionId}`);
  } catch (error) {
    logEvent("session", `could not end ${sessionId}: ${describe(error)}`);
  }
  loadSessions();
}

$("sessions-reload").addEventListener("click", loadSessions);

restore();
