/*
 * edgegw operator console: one ES module, no dependencies, no build step.
 *
 * Served by the admin listener at /console/app.js under
 *   default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; ...
 * so: no inline script or style, no eval, no inline handlers. Every element is made with
 * document.createElement and every text that comes from the API (subjects, ids, bodies,
 * messages) goes in with textContent / append, never as markup: a certificate subject of
 * `<img src=x onerror=alert(1)>` shows as those characters.
 *
 * It is one file because the gateway embeds a fixed list of assets
 * (gateway/src/admin/console.rs); the sections below are what would otherwise be modules.
 *
 * Routes (hash routing; the token is never in the URL):
 *   #/signin  #/overview  #/certificates  #/backends  #/backends?new  #/backends/<id>
 *   #/apis  #/apis?new  #/apis/<id> (Design view)  #/test  #/test?api=<id>
 *
 * data-testid values (<id> is a resource id, <n> a row number). Every form control's
 * data-testid is its element id, and every field has an error line
 * field-error-<control id> (e.g. field-error-design-path), except where named below:
 *   shell        nav-overview, nav-certificates, nav-backends, nav-apis, nav-test, signout,
 *                alert (the page's alert region), status-message (the page's status region)
 *   sign-in      signin-token, signin-submit, signin-error
 *   overview     overview-readiness, overview-generation, overview-steering,
 *                overview-request-rate, overview-error-rate, overview-workers,
 *                overview-certificates, overview-worker-<n>, overview-cert-<id>,
 *                overview-updated
 *   certificates add-certificate, certificates-table, cert-row-<id>, cert-thumbprint-<id>,
 *                copy-thumbprint-<id>, cert-expiry-<id>, replace-certificate-<id>,
 *                delete-certificate-<id>
 *   upload       certificate-dialog, cert-file, cert-id, cert-password, cert-submit,
 *   dialog       cert-cancel, field-error-file, field-error-id, field-error-password,
 *                dialog-alert (the alert region inside any dialog)
 *   in use       in-use-warning (the dialog), in-use-list, in-use-backend-<id>,
 *                in-use-api-<id>, in-use-close
 *   backends     add-backend, backends-table, backend-row-<id>, delete-backend-<id>,
 *                backend-form, backend-id, backend-url, backend-validate-chain,
 *                backend-chain-warning, backend-validate-name, backend-credentials,
 *                backend-trusted-cas, backend-server-names, backend-pins, backend-save,
 *                backend-cancel, backend-delete, field-error-backend-id,
 *                field-error-backend-url, field-error-backend-credentials,
 *                field-error-backend-trusted-cas, field-error-backend-server-names,
 *                field-error-backend-pins
 *   apis         add-api, apis-table, api-row-<id>, test-api-<id>, delete-api-<id>,
 *                api-form, api-id, api-path, api-backend, api-save, api-cancel,
 *                field-error-api-id, field-error-api-path, field-error-api-backend
 *   design       design-view, design-route-form, design-path, design-backend, route-save,
 *                design-test, design-delete, design-credentials, design-certificate,
 *                design-effective, design-save, field-error-design-certificate,
 *                policy-editor, policy-caret, policy-save, policy-revert, policy-delete,
 *                policy-error
 *   test         test-form, test-api, test-method, test-path, test-headers-input,
 *                test-header-name-<n>, test-header-value-<n>, test-header-remove-<n>,
 *                test-add-header, test-body, test-send, test-result, test-status,
 *                test-duration, test-thumbprint, test-certificate-id, test-error,
 *                test-reason, test-request-id, test-request-detail,
 *                test-request-detail-output, test-headers, test-response-body,
 *                test-truncated, field-error-test-path
 *
 * REST calls (all with Authorization: Bearer <token> except /readyz):
 *   GET /certificates, GET|PUT|DELETE /certificates/{id}
 *   GET /backends, GET|PUT|DELETE /backends/{id}
 *   GET /apis, GET|PUT|DELETE /apis/{id}, GET|PUT|DELETE /apis/{id}/policy
 *   POST /apis/{id}/test, GET /requests/{requestId}, GET /overview, GET /readyz
 */

// ==========================================================================================
// DOM helpers
// ==========================================================================================

/** Properties set as DOM properties rather than attributes. */
const PROPS = new Set([
  'value', 'checked', 'disabled', 'selected', 'readOnly', 'hidden', 'multiple', 'required',
  'colSpan', 'rows', 'type', 'accept', 'maxLength', 'spellcheck', 'open',
]);

/**
 * Makes an element. `props`: className, text, htmlFor (or `for`), on: {event: fn}, DOM
 * properties from PROPS, anything else as an attribute. Children: nodes or strings (as
 * text nodes); null / false / undefined are skipped; arrays are flattened.
 */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === 'className') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'for' || key === 'htmlFor') el.htmlFor = value;
    else if (key === 'on') {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (PROPS.has(key)) el[key] = value; // false matters here (spellcheck, checked)
    else if (value !== false) el.setAttribute(key, value === true ? '' : String(value));
  }
  appendChildren(el, children);
  return el;
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children (text or nodes, never markup). */
function setChildren(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
}

/** A link to a route of this console; `id`s are encoded, so no id can make another URL. */
function routeHref(...segments) {
  return '#/' + segments.map((s, i) => (i === 0 ? s : encodeURIComponent(s))).join('/');
}

function link(text, href, props = {}) {
  return h('a', { href, ...props }, text);
}

let uidCounter = 0;
function uid(prefix) {
  uidCounter += 1;
  return `${prefix}-${uidCounter}`;
}

/** Runs an async event handler; what it throws goes to the alert region, never uncaught. */
function safe(fn) {
  return (...args) => {
    Promise.resolve()
      .then(() => fn(...args))
      .catch((err) => reportError(err));
  };
}

/**
 * A form's submit: never a page load; `action` runs once at a time with `button` busy,
 * and what it throws goes to the alert region.
 */
function onSubmit(form, button, busyText, action) {
  const run = safe(busy(button, busyText, action));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    run();
  });
}

/** A button that runs `action` once at a time, disabled (with `busyText`) meanwhile. */
function busy(button, busyText, action) {
  return async (...args) => {
    if (button.disabled) return;
    const label = button.textContent;
    button.disabled = true;
    if (busyText) button.textContent = busyText;
    try {
      return await action(...args);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  };
}

// ==========================================================================================
// Session and REST client
// ==========================================================================================

const TOKEN_KEY = 'edgegw.console.token';

/**
 * The token lives in sessionStorage only: gone with the tab, never in a cookie (so no
 * other site can make the browser send it) and never in the URL (so not in history or
 * logs). If sessionStorage is unavailable it is kept in memory for this page.
 */
const session = {
  memory: null,
  get token() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || this.memory;
    } catch {
      return this.memory;
    }
  },
  set(token) {
    try {
      window.sessionStorage.setItem(TOKEN_KEY, token);
      this.memory = null;
    } catch {
      this.memory = token;
    }
  },
  clear() {
    this.memory = null;
    try {
      window.sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* nothing stored */
    }
  },
};

/** An answer that is not 2xx (or no answer): the contract's error, or one made for it. */
class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = Array.isArray(details) ? details : [];
    /** Set when the 401 handler has already dealt with it (sent the user to sign-in). */
    this.handled = false;
  }
}

let onUnauthorized = () => {};

/**
 * One REST call. Options: json (a body sent as JSON), xml (a body sent as
 * application/xml), signal, token (instead of the session's), auth (false: no
 * Authorization header), ifMatch, allow401 (do not end the session on 401).
 * Resolves to {status, etag, data} (data: parsed JSON, text, or null for 204).
 */
async function api(method, path, options = {}) {
  const headers = new Headers();
  const token = options.token ?? session.token;
  if (options.auth !== false && token) headers.set('Authorization', `Bearer ${token}`);
  if (options.ifMatch) headers.set('If-Match', options.ifMatch);
  let body;
  if (options.json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(options.json);
  } else if (options.xml !== undefined) {
    headers.set('Content-Type', 'application/xml');
    body = options.xml;
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body,
      signal: options.signal,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(
      0,
      'NetworkError',
      'The gateway could not be reached: the request failed before any answer (network error). Check that edgegw is running and try again.',
    );
  }
  const data = await readBody(response);
  if (response.ok) {
    return { status: response.status, etag: response.headers.get('ETag'), data };
  }
  const err = toApiError(response, data);
  if (response.status === 401 && !options.allow401) {
    session.clear();
    err.handled = true;
    onUnauthorized(err);
  }
  throw err;
}

async function readBody(response) {
  if (response.status === 204) return null;
  const text = await response.text().catch(() => '');
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function toApiError(response, data) {
  const e = data && typeof data === 'object' ? data.error : null;
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    return new ApiError(response.status, e.code, String(e.message || e.code), e.details);
  }
  const text = typeof data === 'string' ? data.trim().slice(0, 200) : '';
  return new ApiError(
    response.status,
    `HTTP${response.status}`,
    `The gateway answered ${response.status} ${response.statusText || ''}`.trim() +
      (text ? `: ${text}` : '.'),
  );
}

function isAbort(err) {
  return err && err.name === 'AbortError';
}

const enc = encodeURIComponent;

// ==========================================================================================
// Formatting
// ==========================================================================================

const DAY_MS = 86_400_000;

/** "2026-03-01 12:00 UTC": operators compare with RFC 3339 UTC everywhere else. */
function formatDate(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '');
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/**
 * Expiry as shown: the class is `red` when expired or under 7 days left, `amber` under
 * 30, `ok` otherwise.
 */
function expiry(daysLeft) {
  let text;
  if (daysLeft < 0) text = daysLeft === -1 ? 'expired 1 day ago' : `expired ${-daysLeft} days ago`;
  else if (daysLeft === 0) text = 'expires within a day';
  else if (daysLeft === 1) text = '1 day left';
  else text = `${daysLeft} days left`;
  const level = daysLeft < 7 ? 'red' : daysLeft < 30 ? 'amber' : 'ok';
  return { text, level };
}

function daysUntil(iso, now = Date.now()) {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return 0;
  return Math.floor((t - now) / DAY_MS);
}

function expiryBadge(daysLeft, testid) {
  const { text, level } = expiry(daysLeft);
  return h('span', { className: `badge expiry ${level}`, 'data-testid': testid }, text);
}

function formatNumber(n, digits = 2) {
  const x = Number(n);
  if (!Number.isFinite(x)) return '–';
  return x.toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** Base64 of bytes, in chunks (String.fromCharCode has an argument limit). */
function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The text of an error as the alert shows it: its message and its code. */
function errorParts(err) {
  if (err instanceof ApiError) return { message: err.message, code: err.code };
  return { message: (err && err.message) || String(err), code: 'ConsoleError' };
}

const REASONS = {
  200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 301: 'Moved Permanently',
  302: 'Found', 304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
  405: 'Method Not Allowed', 408: 'Request Timeout', 409: 'Conflict', 412: 'Precondition Failed',
  413: 'Payload Too Large', 415: 'Unsupported Media Type', 429: 'Too Many Requests',
  431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 501: 'Not Implemented',
  502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

// ==========================================================================================
// Alerts, status, fields, tables, dialogs
// ==========================================================================================

const shell = {
  alert: null,
  status: null,
  page: null,
  nav: null,
  signout: null,
};

/** Open modal dialogs, innermost last: errors go to the innermost one's alert region. */
const openDialogs = [];

function currentAlertRegion() {
  const top = openDialogs[openDialogs.length - 1];
  return top ? top.alert : shell.alert;
}

/** Shows an error in an alert region (role="alert"): its message and code. */
function showAlert(err, region = currentAlertRegion(), extra = null) {
  const { message, code } = errorParts(err);
  const dismiss = h(
    'button',
    { type: 'button', className: 'alert-dismiss', 'aria-label': 'Dismiss' },
    '×',
  );
  dismiss.addEventListener('click', () => region.replaceChildren());
  setChildren(
    region,
    h('p', { className: 'alert-text' },
      message, ' ', h('span', { className: 'alert-code' }, `(${code})`),
      extra ? h('span', { className: 'alert-extra' }, ' ', extra) : null),
    dismiss,
  );
}

function clearAlert(region = shell.alert) {
  if (region) region.replaceChildren();
}

/** Reports any error: nothing for an abort or a 401 already handled; else the alert. */
function reportError(err, region) {
  if (isAbort(err) || (err && err.handled)) return;
  if (!(err instanceof ApiError)) console.error(err); // a bug of the console: keep the stack
  showAlert(err, region || currentAlertRegion(), hintFor(err));
}

/** A next step for errors whose message alone does not say what to do. */
function hintFor(err) {
  if (!(err instanceof ApiError)) return null;
  if (err.code === 'PreconditionFailed') return 'Someone changed it since this page loaded: reload the page to see their version.';
  if (err.code === 'Conflict') return 'Another write won the race; reload and try again.';
  return null;
}

let statusTimer = 0;
/** A success message in the status region (role="status"). */
function showStatus(text) {
  window.clearTimeout(statusTimer);
  shell.status.textContent = text;
  statusTimer = window.setTimeout(() => { shell.status.textContent = ''; }, 8000);
}

/**
 * A labelled form field: <label for>, the control, an optional hint and an error line,
 * the latter two tied to the control by aria-describedby. `checkbox`: label after it.
 */
function field({ id, label, control, hint, errorTestid, checkbox = false, after = null }) {
  control.id = id;
  if (!control.hasAttribute('data-testid')) control.setAttribute('data-testid', id);
  const labelEl = h('label', { for: id }, label);
  const hintEl = hint ? h('p', { className: 'hint', id: `${id}-hint` }, hint) : null;
  const errorEl = h('p', {
    className: 'field-error',
    id: `${id}-error`,
    'data-testid': errorTestid || `field-error-${id}`,
  });
  const described = [hintEl && hintEl.id, after && after.id, errorEl.id].filter(Boolean);
  control.setAttribute('aria-describedby', described.join(' '));
  const wrap = checkbox
    ? h('div', { className: 'field check' }, control, labelEl, after, hintEl, errorEl)
    : h('div', { className: 'field' }, labelEl, control, after, hintEl, errorEl);
  return {
    wrap,
    control,
    errorEl,
    setError(message) {
      errorEl.textContent = message || '';
      if (message) control.setAttribute('aria-invalid', 'true');
      else control.removeAttribute('aria-invalid');
    },
  };
}

function clearErrors(fields) {
  for (const f of Object.values(fields)) if (f && f.setError) f.setError('');
}

function textInput(props = {}) {
  return h('input', {
    type: 'text',
    autocomplete: 'off',
    spellcheck: false,
    autocapitalize: 'off',
    ...props,
  });
}

function option(value, text, selected = false) {
  return h('option', { value, selected }, text);
}

/**
 * A table that always has a body row, so it keeps its height while loading: a
 * "Loading…" row first, then the rows, an empty-state row, or an error row.
 */
function dataTable({ columns, testid, caption, size = 'wide' }) {
  const tbody = h('tbody');
  const table = h('table', { className: `data ${size}`, 'data-testid': testid },
    h('caption', { className: 'visually-hidden' }, caption),
    h('thead', null, h('tr', null, columns.map((c) =>
      h('th', { scope: 'col', className: c.className }, c.hidden ? h('span', { className: 'visually-hidden' }, c.label) : c.label)))),
    tbody);
  const wrap = h('div', { className: 'table-scroll' }, table);
  const message = (text, className = '') => {
    setChildren(tbody, h('tr', { className: `placeholder ${className}`.trim() },
      h('td', { colSpan: columns.length }, text)));
  };
  message('Loading…');
  return {
    element: wrap,
    loading: () => message('Loading…'),
    empty: (text) => message(text, 'empty'),
    failed: (text) => message(text, 'error'),
    rows: (rows) => setChildren(tbody, rows),
  };
}

function pageHeader(title, lead, ...actions) {
  return h('div', { className: 'page-header' },
    h('div', null,
      h('h1', { tabindex: '-1', 'data-page-heading': true }, title),
      lead ? h('p', { className: 'lead' }, lead) : null),
    actions.length ? h('div', { className: 'page-actions' }, actions) : null);
}

/**
 * A modal <dialog>: a title, its own alert region (the page's is inert behind it), the
 * content. Escape closes it (the browser's cancel); focus goes to its first field and back
 * to what had it on close; it is removed from the page once closed.
 */
function openDialog({ title, testid, className = '', content, initialFocus }) {
  const titleId = uid('dialog-title');
  const alert = h('div', { className: 'alert', role: 'alert', 'data-testid': 'dialog-alert' });
  const dialog = h('dialog', {
    className: `dialog ${className}`.trim(),
    'aria-labelledby': titleId,
    'data-testid': testid,
  }, h('h2', { id: titleId }, title), alert);
  const entry = { dialog, alert };
  const opener = document.activeElement;
  appendChildren(dialog, [typeof content === 'function' ? content(entry) : content]);
  // The browser fires `close` a task later: the bookkeeping is done at once (so errors
  // meanwhile go to the page, not to a closing dialog) and only once.
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    const i = openDialogs.indexOf(entry);
    if (i >= 0) openDialogs.splice(i, 1);
    dialog.remove();
    if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
  };
  dialog.addEventListener('close', finish);
  document.body.append(dialog);
  openDialogs.push(entry);
  dialog.showModal();
  const first = initialFocus ||
    dialog.querySelector('input:not([disabled]), select:not([disabled]), textarea:not([disabled]), a[href], button:not([disabled]):not(.alert-dismiss)');
  if (first) first.focus();
  entry.close = () => {
    if (dialog.open) dialog.close();
    finish();
  };
  return entry;
}

function closeAllDialogs() {
  for (const entry of openDialogs.slice().reverse()) entry.close();
}

/**
 * Confirmation: the browser's own confirm() (modal, keyboard-ready, Escape cancels and
 * cannot be styled into looking like something else).
 */
function confirmAction(question) {
  return window.confirm(question);
}

/**
 * The 409 "in use" warning: every backend and API that refers to the resource, each a link
 * to where it is changed. `apis` (optional) adds each API's path and backend.
 */
function showInUse({ what, id, error, apis = [], backends = [] }) {
  const apiById = new Map(apis.map((a) => [a.id, a]));
  const backendById = new Map(backends.map((b) => [b.id, b]));
  const items = error.details.map((d) => inUseItem(d, apiById, backendById));
  openDialog({
    title: `${what} ${id} is in use`,
    testid: 'in-use-warning',
    className: 'warning',
    content: (entry) => [
      h('p', null, error.message),
      h('p', null, `It cannot be deleted while ${items.length === 1 ? 'this refers' : 'these refer'} to it:`),
      h('ul', { className: 'in-use-list', 'data-testid': 'in-use-list' }, items),
      h('p', { className: 'muted' },
        'Change each of them first (an API in its Design view, a backend under Gateway credentials), then delete again.'),
      h('div', { className: 'button-row' },
        h('button', {
          type: 'button', className: 'button primary', 'data-testid': 'in-use-close',
          on: { click: () => entry.close() },
        }, 'Close')),
    ],
  });
}

function inUseItem(detail, apiById, backendById) {
  if (detail && detail.kind === 'api' && typeof detail.id === 'string') {
    const a = apiById.get(detail.id);
    return h('li', null, 'API ',
      link(detail.id, routeHref('apis', detail.id), { 'data-testid': `in-use-api-${detail.id}` }),
      a ? [' (path ', h('code', null, a.path), ', backend ',
        link(a.backendId, routeHref('backends', a.backendId)), ')'] : null);
  }
  if (detail && detail.kind === 'backend' && typeof detail.id === 'string') {
    const b = backendById.get(detail.id);
    return h('li', null, 'Backend ',
      link(detail.id, routeHref('backends', detail.id), { 'data-testid': `in-use-backend-${detail.id}` }),
      b ? [' (', h('code', null, b.url), ')'] : null);
  }
  if (detail && detail.kind === 'listener') {
    return h('li', null, 'The listener setting ', h('code', null, String(detail.setting || '')),
      ' in the configuration file');
  }
  return h('li', null, h('code', null, JSON.stringify(detail)));
}

/** Loads what an in-use warning shows about its dependents; best effort. */
async function dependentsContext(signal) {
  const [apis, backends] = await Promise.all([
    api('GET', '/apis', { signal }).then((r) => r.data.value).catch(() => []),
    api('GET', '/backends', { signal }).then((r) => r.data.value).catch(() => []),
  ]);
  return { apis, backends };
}

/**
 * Copies text: the async clipboard where the page may use it (a secure context: https or
 * localhost), else a hidden textarea and execCommand('copy'). Resolves to whether it worked.
 */
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      /* fall through to the fallback */
    }
  }
  const area = h('textarea', { className: 'offscreen', readOnly: true, 'aria-hidden': 'true', tabindex: '-1' });
  area.value = text;
  const active = document.activeElement;
  (openDialogs.length ? openDialogs[openDialogs.length - 1].dialog : document.body).append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  if (active && typeof active.focus === 'function') active.focus();
  return ok;
}

function copyButton(text, testid, label) {
  const button = h('button', {
    type: 'button', className: 'button small', 'data-testid': testid, 'aria-label': label,
  }, 'Copy');
  button.addEventListener('click', safe(async () => {
    const ok = await copyText(text);
    showStatus(ok ? 'Thumbprint copied to the clipboard.' : 'Copying is not available here: select the thumbprint and press Ctrl+C (⌘C).');
  }));
  return button;
}

// ==========================================================================================
// Policy XML: read and set the <authentication-certificate> of a stored policy
// ==========================================================================================

/** What GET /apis/{id}/policy returns for an API without a policy. */
const EMPTY_POLICY = '<policies>\n  <inbound>\n    <base />\n  </inbound>\n  <backend>\n    <base />\n  </backend>\n  <outbound>\n    <base />\n  </outbound>\n  <on-error>\n    <base />\n  </on-error>\n</policies>\n';

/**
 * The XML with comments, CDATA and processing instructions blanked out (same length, same
 * line breaks), so that searching it for elements cannot find one inside a comment while
 * the offsets still apply to the original text.
 */
function maskXml(xml) {
  return xml.replace(/<!--[\s\S]*?(?:-->|$)|<!\[CDATA\[[\s\S]*?(?:\]\]>|$)|<\?[\s\S]*?(?:\?>|$)/g,
    (m) => m.replace(/[^\n]/g, ' '));
}

const AUTH_CERT_RE = /<authentication-certificate(?=[\s/>])[^>]*?(?:\/>|>\s*<\/authentication-certificate\s*>)/;

/** The policy's certificate binding: {kind: 'id'|'thumbprint', value} or null. */
function readBinding(xml) {
  const masked = maskXml(xml);
  const m = AUTH_CERT_RE.exec(masked);
  if (!m) return null;
  const tag = xml.slice(m.index, m.index + m[0].length);
  const attr = (name) => {
    const a = new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`).exec(tag);
    return a ? (a[1] ?? a[2]) : null;
  };
  const id = attr('certificate-id');
  if (id !== null) return { kind: 'id', value: id };
  const thumbprint = attr('thumbprint');
  if (thumbprint !== null) return { kind: 'thumbprint', value: thumbprint };
  return null;
}

function escapeAttr(value) {
  return String(value).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

function bindingElement(binding) {
  const attr = binding.kind === 'thumbprint' ? 'thumbprint' : 'certificate-id';
  return `<authentication-certificate ${attr}="${escapeAttr(binding.value)}" />`;
}

function indentAt(text, index) {
  const lineStart = text.lastIndexOf('\n', index - 1) + 1;
  const m = /^[ \t]*/.exec(text.slice(lineStart));
  return m ? m[0] : '';
}

/**
 * The policy with its <authentication-certificate> set to `binding` (or removed for null),
 * editing the text in place so the rest (comments, layout, other policies such as
 * <validate-client-certificate>) stays as the operator wrote it.
 */
function withBinding(xml, binding) {
  const source = xml && xml.trim() ? xml : EMPTY_POLICY;
  const masked = maskXml(source);
  const found = AUTH_CERT_RE.exec(masked);
  if (found) {
    const start = found.index;
    const end = start + found[0].length;
    if (binding) return source.slice(0, start) + bindingElement(binding) + source.slice(end);
    // Remove the element, and its line when it was alone on it.
    const lineStart = source.lastIndexOf('\n', start - 1) + 1;
    const nl = source.indexOf('\n', end);
    const lineEnd = nl < 0 ? source.length : nl;
    if (!source.slice(lineStart, start).trim() && !source.slice(end, lineEnd).trim()) {
      return source.slice(0, lineStart) + source.slice(nl < 0 ? lineEnd : lineEnd + 1);
    }
    return source.slice(0, start) + source.slice(end);
  }
  if (!binding) return source;
  const element = bindingElement(binding);
  const open = /<inbound\s*>/.exec(masked);
  if (open) {
    const openEnd = open.index + open[0].length;
    const close = masked.slice(openEnd).search(/<\/inbound\s*>/);
    const inside = close < 0 ? masked.slice(openEnd) : masked.slice(openEnd, openEnd + close);
    const base = /<base\s*\/>|<base\s*>\s*<\/base\s*>/.exec(inside);
    const at = base ? openEnd + base.index + base[0].length : openEnd;
    // One element a line stays so; a compact one-line policy stays compact.
    const nl = source.indexOf('\n', at);
    if (source.slice(at, nl < 0 ? source.length : nl).trim()) {
      return source.slice(0, at) + element + source.slice(at);
    }
    const indent = base ? indentAt(source, openEnd + base.index) : `${indentAt(source, open.index)}  `;
    return `${source.slice(0, at)}\n${indent}${element}${source.slice(at)}`;
  }
  const selfClosed = /<inbound\s*\/>/.exec(masked);
  if (selfClosed) {
    const indent = indentAt(source, selfClosed.index);
    const block = `<inbound>\n${indent}  <base />\n${indent}  ${element}\n${indent}</inbound>`;
    return source.slice(0, selfClosed.index) + block + source.slice(selfClosed.index + selfClosed[0].length);
  }
  const root = /<policies\s*>/.exec(masked);
  if (root) {
    const at = root.index + root[0].length;
    return `${source.slice(0, at)}\n  <inbound>\n    <base />\n    ${element}\n  </inbound>${source.slice(at)}`;
  }
  return withBinding(EMPTY_POLICY, binding);
}

/** Whether a policy says nothing beyond <base /> in each section (the skeleton). */
function isEmptyPolicy(xml) {
  const squash = (s) => maskXml(s).replace(/\s+/g, '').replace(/<base><\/base>/g, '<base/>');
  return squash(xml) === squash(EMPTY_POLICY);
}

/**
 * The UTF-16 offset of a 1-based line and column (the column counts characters, as the
 * gateway's InvalidPolicy does), clamped to the text.
 */
function offsetOf(text, line, column) {
  let pos = 0;
  for (let l = 1; l < line; l += 1) {
    const nl = text.indexOf('\n', pos);
    if (nl < 0) return text.length;
    pos = nl + 1;
  }
  for (let c = 1; c < column && pos < text.length && text[pos] !== '\n'; c += 1) {
    pos += text.codePointAt(pos) > 0xffff ? 2 : 1;
  }
  return pos;
}

/** The 1-based line and column (in characters) of a UTF-16 offset. */
function lineColumnOf(text, offset) {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const lineText = before.slice(before.lastIndexOf('\n') + 1);
  return { line, column: Array.from(lineText).length + 1 };
}

/** Puts the caret (selecting one character, so it shows) at a line and column. */
function moveCaret(textarea, line, column) {
  const text = textarea.value;
  const start = offsetOf(text, line, column);
  let end = start;
  if (start < text.length && text[start] !== '\n') end = start + (text.codePointAt(start) > 0xffff ? 2 : 1);
  textarea.focus();
  textarea.setSelectionRange(start, end);
  // setSelectionRange does not always scroll a textarea: bring the line into view.
  const lineHeight = parseFloat(window.getComputedStyle(textarea).lineHeight) || 20;
  textarea.scrollTop = Math.max(0, (line - 3) * lineHeight);
}

// ==========================================================================================
// Pages
// ==========================================================================================

// ---- sign-in ----------------------------------------------------------------------------

let returnTo = null;

function pageSignIn(ctx) {
  const token = h('input', {
    type: 'password', autocomplete: 'off', spellcheck: false, autocapitalize: 'off',
    'data-testid': 'signin-token',
  });
  const tokenField = field({
    id: 'signin-token', label: 'Admin token', control: token,
    hint: 'The admin token: EDGEGW_ADMIN_TOKEN, admin.token in the configuration, or the file admin.token in the data directory. It is kept for this browser tab only.',
  });
  const error = h('p', { className: 'signin-error', id: 'signin-error', role: 'alert', 'data-testid': 'signin-error' });
  token.setAttribute('aria-describedby', `${token.getAttribute('aria-describedby')} signin-error`);
  const submit = h('button', { type: 'submit', className: 'button primary', 'data-testid': 'signin-submit' }, 'Sign in');
  const form = h('form', { className: 'form', novalidate: true }, tokenField.wrap, error, h('div', { className: 'button-row' }, submit));

  onSubmit(form, submit, 'Signing in…', () => signIn(token, error));

  setChildren(ctx.root, h('div', { className: 'signin' },
    h('div', { className: 'card' },
      h('h1', { tabindex: '-1', 'data-page-heading': true }, 'Sign in'),
      h('p', { className: 'lead' }, 'Sign in to the edgegw operator console with the admin API token.'),
      form)));
  ctx.focusAfterRender = token;
}

async function signIn(tokenInput, errorEl) {
  errorEl.textContent = '';
  tokenInput.removeAttribute('aria-invalid');
  const value = tokenInput.value.trim();
  if (!value) {
    errorEl.textContent = 'Enter the admin token.';
    tokenInput.setAttribute('aria-invalid', 'true');
    tokenInput.focus();
    return;
  }
  try {
    // Any authenticated call proves the token; this one is cheap and read-only.
    await api('GET', '/certificates', { token: value, allow401: true });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      errorEl.textContent = 'That token is not valid.';
    } else {
      const { message, code } = errorParts(err);
      errorEl.textContent = `${message} (${code})`;
    }
    tokenInput.setAttribute('aria-invalid', 'true');
    tokenInput.focus();
    tokenInput.select();
    return;
  }
  session.set(value);
  tokenInput.value = '';
  const target = returnTo && returnTo !== '#/signin' ? returnTo : '#/overview';
  returnTo = null;
  navigate(target);
}

// ---- overview ---------------------------------------------------------------------------

const OVERVIEW_REFRESH_MS = 10_000;

async function pageOverview(ctx) {
  const stat = (label, testid) => {
    const value = h('p', { className: 'stat-value', 'data-testid': testid }, '…');
    const note = h('p', { className: 'stat-note' });
    return { element: h('div', { className: 'stat' }, h('p', { className: 'stat-label' }, label), value, note), value, note };
  };
  const stats = {
    readiness: stat('Readiness', 'overview-readiness'),
    generation: stat('Configuration generation', 'overview-generation'),
    steering: stat('Steering mode', 'overview-steering'),
    requests: stat('Request rate', 'overview-request-rate'),
    errors: stat('Error rate', 'overview-error-rate'),
  };
  const workers = dataTable({
    caption: 'Workers', testid: 'overview-workers', size: 'narrow',
    columns: [{ label: 'Worker' }, { label: 'I/O driver' }],
  });
  const certs = dataTable({
    caption: 'Client certificates expiring soonest', testid: 'overview-certificates', size: 'medium',
    columns: [{ label: 'Certificate' }, { label: 'Expires' }, { label: 'Days left' }],
  });
  const updated = h('p', { className: 'updated', 'data-testid': 'overview-updated', 'aria-live': 'off' }, '');
  const refresh = h('button', { type: 'button', className: 'button' }, 'Refresh');

  setChildren(ctx.root,
    pageHeader('Overview', 'The gateway at a glance: configuration, workers, traffic and the client certificates that expire next.', updated, refresh),
    h('div', { className: 'stats' }, Object.values(stats).map((s) => s.element)),
    h('div', { className: 'two-col' },
      h('section', { className: 'card' }, h('h2', null, 'Workers'), workers.element),
      h('section', { className: 'card' },
        h('h2', null, 'Certificates expiring soonest'),
        h('p', { className: 'lead' }, 'Amber: under 30 days left. Red: under 7 days, or expired.'),
        certs.element)));

  const load = async () => {
    const [overview, ready] = await Promise.all([
      api('GET', '/overview', { signal: ctx.signal }).then((r) => r.data),
      readiness(ctx.signal),
    ]);
    if (ctx.signal.aborted) return;
    renderOverview(overview, ready, stats, workers, certs);
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${OVERVIEW_REFRESH_MS / 1000} s.`;
  };
  const reload = async () => {
    try {
      await load();
      clearAlert();
    } catch (err) {
      if (isAbort(err)) return;
      ctx.report(err);
      for (const s of Object.values(stats)) if (s.value.textContent === '…') s.value.textContent = '–';
      workers.failed('Could not load the overview.');
      certs.failed('Could not load the overview.');
    }
  };
  refresh.addEventListener('click', safe(busy(refresh, 'Refreshing…', reload)));
  // The rates are per second since the previous call: refresh while the page is shown.
  const timer = window.setInterval(() => {
    if (document.visibilityState === 'visible') reload();
  }, OVERVIEW_REFRESH_MS);
  ctx.onCleanup(() => window.clearInterval(timer));
  await reload();
}

/** GET /readyz (no token): {ready, text}. */
async function readiness(signal) {
  try {
    await api('GET', '/readyz', { auth: false, signal, allow401: true });
    return { ready: true, text: 'Ready', note: 'The store is loaded and every worker serves.' };
  } catch (err) {
    if (isAbort(err)) throw err;
    if (err instanceof ApiError && err.code === 'NotReady') {
      const reason = err.details.map((d) => d && d.reason).filter(Boolean).join(', ');
      return { ready: false, text: 'Not ready', note: `${err.message}${reason ? ` (${reason})` : ''}` };
    }
    return { ready: false, text: 'Unknown', note: errorParts(err).message };
  }
}

function renderOverview(o, ready, stats, workers, certs) {
  stats.readiness.value.textContent = ready.text;
  stats.readiness.value.className = `stat-value ${ready.ready ? 'ok' : 'red'}`;
  stats.readiness.note.textContent = ready.note;
  stats.generation.value.textContent = String(o.generation ?? '–');
  stats.generation.note.textContent = 'Counts every published change.';
  const mode = String(o.steeringMode ?? '–');
  stats.steering.value.textContent = mode;
  stats.steering.note.textContent = mode === 'ebpf'
    ? 'Connections are steered to workers by the eBPF program.'
    : mode === 'kernel' ? 'The kernel spreads connections (SO_REUSEPORT).' : '';
  stats.requests.value.textContent = `${formatNumber(o.requestRate)} /s`;
  stats.requests.note.textContent = 'Requests answered per second.';
  stats.errors.value.textContent = `${formatNumber(o.errorRate)} /s`;
  const share = Number(o.requestRate) > 0 ? (100 * Number(o.errorRate)) / Number(o.requestRate) : null;
  stats.errors.note.textContent = share === null
    ? 'Answers with status 500 or above, per second.'
    : `Status 500 or above: ${formatNumber(share, 1)} % of requests.`;

  const list = Array.isArray(o.workers) ? o.workers : [];
  if (!list.length) workers.empty('No workers reported.');
  else {
    workers.rows(list.map((w) => h('tr', { 'data-testid': `overview-worker-${w.id}` },
      h('td', null, `Worker ${w.id}`),
      h('td', null, h('code', null, String(w.driver ?? ''))))));
  }
  const expiring = Array.isArray(o.certificates) ? o.certificates : [];
  if (!expiring.length) certs.empty('No client certificates yet.');
  else {
    certs.rows(expiring.map((c) => {
      const days = Number.isFinite(Number(c.daysLeft)) ? Number(c.daysLeft) : daysUntil(c.expirationDate);
      return h('tr', { 'data-testid': `overview-cert-${c.id}` },
        h('td', null, link(c.id, '#/certificates')),
        h('td', null, h('time', { datetime: c.expirationDate }, formatDate(c.expirationDate))),
        h('td', null, expiryBadge(days)));
    }));
  }
}

// ---- client certificates ----------------------------------------------------------------

async function pageCertificates(ctx) {
  const state = { certificates: [] };
  const add = h('button', { type: 'button', className: 'button primary', id: 'add-certificate', 'data-testid': 'add-certificate' }, '+ Add');
  const table = dataTable({
    caption: 'Client certificates', testid: 'certificates-table',
    columns: [
      { label: 'Id' }, { label: 'Subject' }, { label: 'Issuer' }, { label: 'Thumbprint (SHA-1)' },
      { label: 'Expires' }, { label: 'Self-signed' }, { label: 'Key' }, { label: 'Actions', hidden: true },
    ],
  });
  setChildren(ctx.root,
    pageHeader('Client certificates',
      'The certificates the gateway presents to backends (mutual TLS). Bind one to a backend under Gateway credentials, or to an API in its Design view.',
      add),
    table.element);

  const load = async () => {
    table.loading();
    try {
      const { data } = await api('GET', '/certificates', { signal: ctx.signal });
      state.certificates = data.value || [];
    } catch (err) {
      if (isAbort(err)) return;
      table.failed('The certificates could not be loaded.');
      throw err;
    }
    if (!state.certificates.length) {
      table.empty('No client certificates yet. Add one with + Add.');
      return;
    }
    table.rows(state.certificates.map((c) => certificateRow(c, ctx, load)));
  };
  add.addEventListener('click', () => openUpload(ctx, load));
  await load();
}

function certificateRow(c, ctx, reload) {
  const days = daysUntil(c.expirationDate);
  const replace = h('button', {
    type: 'button', className: 'button small', 'data-testid': `replace-certificate-${c.id}`,
    'aria-label': `Replace ${c.id}`,
  }, 'Replace');
  replace.addEventListener('click', () => openUpload(ctx, reload, c.id));
  const del = h('button', {
    type: 'button', className: 'button small danger', 'data-testid': `delete-certificate-${c.id}`,
    'aria-label': `Delete ${c.id}`,
  }, 'Delete');
  del.addEventListener('click', safe(() => deleteCertificate(c.id, ctx, reload)));
  return h('tr', { 'data-testid': `cert-row-${c.id}` },
    h('th', { scope: 'row' }, c.id),
    h('td', { className: 'subject' }, c.subject),
    h('td', { className: 'subject' }, c.issuer),
    h('td', null, h('span', { className: 'thumbprint' },
      h('code', { 'data-testid': `cert-thumbprint-${c.id}` }, c.thumbprint),
      copyButton(c.thumbprint, `copy-thumbprint-${c.id}`, `Copy thumbprint of ${c.id}`))),
    h('td', null,
      h('time', { className: 'expiry-date', datetime: c.expirationDate }, formatDate(c.expirationDate)),
      expiryBadge(days, `cert-expiry-${c.id}`)),
    h('td', null, c.selfSigned ? 'Yes' : 'No'),
    h('td', { className: 'nowrap' }, c.keyAlgorithm || ''),
    h('td', { className: 'actions' }, replace, del));
}

async function deleteCertificate(id, ctx, reload) {
  if (!confirmAction(`Delete certificate ${id}? Backends and APIs can no longer present it.`)) return;
  try {
    await api('DELETE', `/certificates/${enc(id)}`, { signal: ctx.signal });
  } catch (err) {
    if (err instanceof ApiError && err.code === 'CertificateInUse') {
      showInUse({ what: 'Certificate', id, error: err, ...(await dependentsContext(ctx.signal)) });
      return;
    }
    throw err;
  }
  showStatus(`Certificate ${id} deleted.`);
  await reload();
}

/** Which upload field each error code is about (the rest go to the dialog's alert). */
const UPLOAD_FIELD = {
  WrongPassword: 'password',
  InvalidId: 'id',
  InvalidPkcs12: 'file',
  MissingPrivateKey: 'file',
  KeyMismatch: 'file',
  CertificateExpired: 'file',
  PayloadTooLarge: 'file',
};

/** Sentences for codes whose message the gateway might leave out. */
const UPLOAD_SENTENCE = {
  WrongPassword: 'The password does not open this file.',
  InvalidId: 'Ids are 1 to 80 characters of A–Z, a–z, 0–9, dot, underscore and hyphen.',
  InvalidPkcs12: 'This file is not a PKCS#12 (.pfx / .p12) file.',
  MissingPrivateKey: 'The file holds no private key for the certificate.',
  KeyMismatch: 'The private key in the file does not match its certificate.',
  CertificateExpired: 'The certificate in the file has expired.',
  PayloadTooLarge: 'The file is too large to upload.',
};

/** An id from a file name: "client 1.pfx" → "client-1". */
function idFromFileName(name) {
  return name.replace(/\.(pfx|p12)$/i, '').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 80);
}

function openUpload(ctx, reload, presetId = '') {
  const fields = {
    file: field({
      id: 'cert-file', label: 'PKCS#12 file (.pfx or .p12)', errorTestid: 'field-error-file',
      control: h('input', { type: 'file', accept: '.pfx,.p12,application/x-pkcs12' }),
      hint: 'The certificate, its chain and its private key. Modern (AES-256) and legacy (3DES/RC2) files both work.',
    }),
    id: field({
      id: 'cert-id', label: 'Id', errorTestid: 'field-error-id',
      control: textInput({ maxLength: 80, value: presetId }),
      hint: '1 to 80 characters: letters, digits, dot, underscore, hyphen. Backends and policies refer to it.',
    }),
    password: field({
      id: 'cert-password', label: 'Password', errorTestid: 'field-error-password',
      control: h('input', { type: 'password', autocomplete: 'off' }),
      hint: 'The password of the file (empty if it has none). It is not stored.',
    }),
  };
  // Suggest an id from the file name until the operator types one.
  let idTouched = Boolean(presetId);
  fields.id.control.addEventListener('input', () => { idTouched = true; });
  fields.file.control.addEventListener('change', () => {
    const file = fields.file.control.files[0];
    if (file && !idTouched) fields.id.control.value = idFromFileName(file.name);
  });

  const submit = h('button', { type: 'submit', className: 'button primary', 'data-testid': 'cert-submit' }, 'Upload');
  const form = h('form', { novalidate: true },
    fields.file.wrap, fields.id.wrap, fields.password.wrap,
    h('div', { className: 'button-row' },
      h('span', { className: 'spacer' }),
      h('button', { type: 'button', className: 'button', 'data-testid': 'cert-cancel', value: 'cancel' }, 'Cancel'),
      submit));
  const dialog = openDialog({
    title: presetId ? `Replace certificate ${presetId}` : 'Add a client certificate',
    testid: 'certificate-dialog',
    content: form,
  });
  form.querySelector('[data-testid="cert-cancel"]').addEventListener('click', () => dialog.close());
  onSubmit(form, submit, 'Uploading…', async () => {
    clearAlert(dialog.alert);
    clearErrors(fields);
    try {
      const done = await upload(fields, ctx);
      if (!done) return;
      dialog.close();
      showStatus(done.status === 201 ? `Certificate ${done.id} added.` : `Certificate ${done.id} replaced.`);
      await reload();
    } catch (err) {
      uploadError(err, fields, dialog, ctx);
    }
  });
}

/** Validates, confirms a replacement, uploads. Resolves to {id, status} or null. */
async function upload(fields, ctx) {
  const file = fields.file.control.files[0];
  const id = fields.id.control.value.trim();
  let invalid = null;
  if (!file) {
    fields.file.setError('Choose a .pfx or .p12 file.');
    invalid = invalid || fields.file.control;
  }
  if (!id) {
    fields.id.setError('Enter an id for the certificate.');
    invalid = invalid || fields.id.control;
  } else if (/^\.+$/.test(id)) {
    // A browser resolves "." and ".." in a URL path before sending it.
    fields.id.setError('An id made only of dots cannot be used from a browser; choose another.');
    invalid = invalid || fields.id.control;
  }
  if (invalid) {
    invalid.focus();
    return null;
  }
  // Uploading under an existing id replaces that certificate: ask first.
  let existing = null;
  try {
    existing = (await api('GET', `/certificates/${enc(id)}`, { signal: ctx.signal })).data;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  }
  if (existing && !confirmAction(`Replace certificate ${id}? (thumbprint ${existing.thumbprint}, expires ${formatDate(existing.expirationDate)}). Every backend and API that uses it presents the new one from its next call.`)) {
    return null;
  }
  const data = toBase64(await file.arrayBuffer());
  const { status } = await api('PUT', `/certificates/${enc(id)}`, {
    json: { data, password: fields.password.control.value },
    signal: ctx.signal,
  });
  return { id, status };
}

function uploadError(err, fields, dialog, ctx) {
  if (isAbort(err) || (err && err.handled)) return;
  if (err instanceof ApiError && err.code === 'CertificateInUse') {
    // A replacement with another thumbprint while something refers to the old one.
    const id = fields.id.control.value.trim();
    dependentsContext(ctx.signal).then((deps) => showInUse({ what: 'Certificate', id, error: err, ...deps }));
    return;
  }
  const where = err instanceof ApiError ? UPLOAD_FIELD[err.code] : null;
  if (where) {
    fields[where].setError(err.message || UPLOAD_SENTENCE[err.code]);
    fields[where].control.focus();
  }
  showAlert(err, dialog.alert);
}

// ---- backends ---------------------------------------------------------------------------

async function pageBackends(ctx) {
  if (ctx.query.has('new')) return pageBackendForm(ctx, null);
  const add = link('+ Add backend', '#/backends?new', { className: 'button primary', 'data-testid': 'add-backend' });
  const table = dataTable({
    caption: 'Backends', testid: 'backends-table',
    columns: [
      { label: 'Id' }, { label: 'URL' }, { label: 'Chain validation' }, { label: 'Name validation' },
      { label: 'Gateway credentials' }, { label: 'Actions', hidden: true },
    ],
  });
  setChildren(ctx.root,
    pageHeader('Backends', 'The services APIs forward to, how the gateway checks their TLS certificate, and the client certificate it presents to them.', add),
    table.element);

  const load = async () => {
    table.loading();
    let backends;
    try {
      backends = (await api('GET', '/backends', { signal: ctx.signal })).data.value || [];
    } catch (err) {
      if (isAbort(err)) return;
      table.failed('The backends could not be loaded.');
      throw err;
    }
    if (!backends.length) {
      table.empty('No backends yet. Add one with + Add backend.');
      return;
    }
    table.rows(backends.map((b) => backendRow(b, ctx, load)));
  };
  await load();
}

function onOff(on) {
  return h('span', { className: `badge ${on ? 'ok' : 'amber'}` }, on ? 'On' : 'Off');
}

function credentialsText(credentials) {
  if (!credentials) return h('span', { className: 'muted' }, 'None');
  if (credentials.certificateId) {
    return ['Certificate ', h('code', null, credentials.certificateId)];
  }
  if (credentials.certificateThumbprint) {
    return ['Thumbprint ', h('code', null, credentials.certificateThumbprint)];
  }
  return h('span', { className: 'muted' }, 'None');
}

function backendRow(b, ctx, reload) {
  const del = h('button', {
    type: 'button', className: 'button small danger', 'data-testid': `delete-backend-${b.id}`,
    'aria-label': `Delete ${b.id}`,
  }, 'Delete');
  del.addEventListener('click', safe(async () => {
    if (await deleteBackend(b.id, ctx)) await reload();
  }));
  const tls = b.tls || {};
  return h('tr', { 'data-testid': `backend-row-${b.id}` },
    h('th', { scope: 'row' }, link(b.id, routeHref('backends', b.id))),
    h('td', null, h('code', null, b.url)),
    h('td', null, onOff(tls.validateCertificateChain !== false)),
    h('td', null, onOff(tls.validateCertificateName !== false)),
    h('td', null, credentialsText(b.credentials)),
    h('td', { className: 'actions' },
      link('Edit', routeHref('backends', b.id), { className: 'button small', 'aria-label': `Edit ${b.id}` }),
      del));
}

/** Deletes a backend after confirmation; a 409 shows the APIs that use it. */
async function deleteBackend(id, ctx) {
  if (!confirmAction(`Delete backend ${id}?`)) return false;
  try {
    await api('DELETE', `/backends/${enc(id)}`, { signal: ctx.signal });
  } catch (err) {
    if (err instanceof ApiError && err.code === 'BackendInUse') {
      showInUse({ what: 'Backend', id, error: err, ...(await dependentsContext(ctx.signal)) });
      return false;
    }
    throw err;
  }
  showStatus(`Backend ${id} deleted.`);
  return true;
}

/** Lines (or commas) to a list; empty entries dropped. */
function listFromText(text) {
  return text.split(/[\n,]+/).map((s) => s.trim()).filter(Boolean);
}

async function pageBackendForm(ctx, id) {
  const editing = id !== null;
  const fields = {
    id: field({
      id: 'backend-id', label: 'Id', errorTestid: 'field-error-backend-id',
      control: textInput({ maxLength: 80, readOnly: editing, value: id || '' }),
      hint: editing ? 'The id cannot change; to rename, create a new backend.' : '1 to 80 characters: letters, digits, dot, underscore, hyphen.',
    }),
    url: field({
      id: 'backend-url', label: 'URL', errorTestid: 'field-error-backend-url',
      control: textInput({ type: 'url', placeholder: 'https://orders.internal:8443/base', inputmode: 'url' }),
      hint: 'https://host[:port][/base-path]. A request for an API path goes to the base path plus the rest of the request path.',
    }),
    chain: field({
      id: 'backend-validate-chain', label: 'Validate certificate chain', checkbox: true,
      control: h('input', { type: 'checkbox', checked: true }),
      after: h('p', { className: 'notice warning', id: 'backend-chain-warning', 'data-testid': 'backend-chain-warning' },
        'A backend with a self-signed certificate needs certificate chain validation turned off; otherwise calls fail with 500.'),
    }),
    name: field({
      id: 'backend-validate-name', label: 'Validate certificate name', checkbox: true,
      control: h('input', { type: 'checkbox', checked: true }),
      hint: 'The certificate must name the URL’s host (or one of the server names below).',
    }),
    credentials: field({
      id: 'backend-credentials', label: 'Gateway credentials', errorTestid: 'field-error-backend-credentials',
      control: h('select', null, option('', 'None', true)),
      hint: 'The client certificate the gateway presents to this backend. An API’s policy can override it.',
    }),
    cas: field({
      id: 'backend-trusted-cas', label: 'Trusted CA certificates', errorTestid: 'field-error-backend-trusted-cas',
      control: h('textarea', { rows: 2, className: 'code', spellcheck: false }),
      hint: 'Ids of uploaded CA certificates, one per line: the chain is validated against exactly these. Needs chain validation.',
    }),
    names: field({
      id: 'backend-server-names', label: 'Server names', errorTestid: 'field-error-backend-server-names',
      control: h('textarea', { rows: 2, className: 'code', spellcheck: false }),
      hint: 'DNS names, one per line, one of which the certificate must carry instead of the URL’s host. Needs name validation.',
    }),
    pins: field({
      id: 'backend-pins', label: 'Pinned server thumbprints', errorTestid: 'field-error-backend-pins',
      control: h('textarea', { rows: 2, className: 'code', spellcheck: false }),
      hint: 'SHA-1 thumbprints (40 hex), one per line; the backend’s certificate must have one of them, whatever the checks above say.',
    }),
  };
  const save = h('button', { type: 'submit', className: 'button primary', 'data-testid': 'backend-save' }, editing ? 'Save' : 'Create');
  const del = editing ? h('button', { type: 'button', className: 'button danger', 'data-testid': 'backend-delete' }, 'Delete') : null;
  const more = h('details', { className: 'more' },
    h('summary', null, 'More TLS settings'),
    fields.cas.wrap, fields.names.wrap, fields.pins.wrap);
  // Disabled until loaded: the form keeps its place and size meanwhile.
  const body = h('fieldset', { className: 'plain', disabled: true },
    fields.id.wrap, fields.url.wrap,
    h('fieldset', null, h('legend', null, 'TLS to the server'), fields.chain.wrap, fields.name.wrap),
    fields.credentials.wrap, more,
    h('div', { className: 'button-row' },
      save,
      link('Cancel', '#/backends', { className: 'button', 'data-testid': 'backend-cancel' }),
      h('span', { className: 'spacer' }),
      del));
  const form = h('form', { className: 'form card', novalidate: true, 'data-testid': 'backend-form' }, body);
  setChildren(ctx.root,
    h('p', { className: 'breadcrumb' }, link('Backends', '#/backends'), ' / ', editing ? id : 'New'),
    pageHeader(editing ? `Backend ${id}` : 'New backend',
      editing ? 'Changes apply from the next request: no restart, no reload.' : 'Where an API forwards its requests, and how the gateway talks TLS to it.'),
    form);

  let certificates = [];
  let etag = null;
  try {
    const [certs, backend] = await Promise.all([
      api('GET', '/certificates', { signal: ctx.signal }),
      editing ? api('GET', `/backends/${enc(id)}`, { signal: ctx.signal }) : null,
    ]);
    certificates = certs.data.value || [];
    fillCredentialOptions(fields.credentials.control, certificates, backend && backend.data.credentials);
    if (backend) {
      etag = backend.etag;
      fillBackend(fields, backend.data);
    }
  } catch (err) {
    if (isAbort(err)) return;
    if (err instanceof ApiError && err.status === 404 && editing) {
      setChildren(ctx.root, notFound(`Backend ${id} does not exist.`, '#/backends', 'Back to backends'));
      return;
    }
    throw err;
  }
  body.disabled = false;
  if (!editing) ctx.focusAfterLoad(fields.id.control);

  onSubmit(form, save, 'Saving…', async () => {
    clearAlert();
    clearErrors(fields);
    const saved = await saveBackend(fields, { editing, etag, ctx });
    if (saved) navigate('#/backends', { flash: `Backend ${saved.id} ${saved.status === 201 ? 'created' : 'saved'}.` });
  });
  if (del) {
    del.addEventListener('click', safe(async () => {
      clearAlert();
      if (await deleteBackend(id, ctx)) navigate('#/backends', { flash: `Backend ${id} deleted.` });
    }));
  }
}

function fillCredentialOptions(select, certificates, current) {
  const options = [option('', 'None', !current)];
  for (const c of certificates) {
    options.push(option(c.id, `${c.id} — ${c.thumbprint}`, Boolean(current && current.certificateId === c.id)));
  }
  if (current && current.certificateThumbprint) {
    // A binding by thumbprint stays one unless the operator picks another option.
    const t = current.certificateThumbprint.toUpperCase();
    const match = certificates.find((c) => c.thumbprint.toUpperCase() === t);
    options.push(option(`thumbprint:${t}`, `Thumbprint ${t}${match ? ` (${match.id})` : ' (no uploaded certificate has it)'}`, true));
  }
  if (current && current.certificateId && !certificates.some((c) => c.id === current.certificateId)) {
    options.push(option(current.certificateId, `${current.certificateId} (not uploaded)`, true));
  }
  setChildren(select, options);
}

function fillBackend(fields, b) {
  const tls = b.tls || {};
  fields.url.control.value = b.url || '';
  fields.chain.control.checked = tls.validateCertificateChain !== false;
  fields.name.control.checked = tls.validateCertificateName !== false;
  fields.cas.control.value = (tls.trustedCaCertificateIds || []).join('\n');
  fields.names.control.value = (tls.serverX509Names || []).join('\n');
  fields.pins.control.value = (tls.serverCertificateThumbprints || []).join('\n');
}

/** Which backend field an error is about. */
function backendErrorField(err) {
  if (!(err instanceof ApiError)) return null;
  switch (err.code) {
    case 'InvalidId': return 'id';
    case 'CertificateNotFound': return 'credentials';
    case 'CaCertificateNotFound': return 'cas';
    case 'InvalidRequest': {
      const m = err.message;
      if (/credentials/i.test(m)) return 'credentials';
      if (/trustedCaCertificateIds/.test(m)) return 'cas';
      if (/serverX509Names/.test(m)) return 'names';
      if (/serverCertificateThumbprints/.test(m)) return 'pins';
      return 'url';
    }
    default: return null;
  }
}

async function saveBackend(fields, { editing, etag, ctx }) {
  const id = fields.id.control.value.trim();
  const url = fields.url.control.value.trim();
  if (!id) fields.id.setError('Enter an id for the backend.');
  else if (/^\.+$/.test(id)) fields.id.setError('An id made only of dots cannot be used from a browser; choose another.');
  if (!url) fields.url.setError('Enter the backend’s URL, e.g. https://orders.internal:8443.');
  if (!id || /^\.+$/.test(id) || !url) {
    (!id || /^\.+$/.test(id) ? fields.id.control : fields.url.control).focus();
    return null;
  }
  const tls = {
    validateCertificateChain: fields.chain.control.checked,
    validateCertificateName: fields.name.control.checked,
  };
  const cas = listFromText(fields.cas.control.value);
  const names = listFromText(fields.names.control.value);
  const pins = listFromText(fields.pins.control.value);
  if (cas.length) tls.trustedCaCertificateIds = cas;
  if (names.length) tls.serverX509Names = names;
  if (pins.length) tls.serverCertificateThumbprints = pins;
  const body = { url, tls };
  const cred = fields.credentials.control.value;
  if (cred.startsWith('thumbprint:')) body.credentials = { certificateThumbprint: cred.slice('thumbprint:'.length) };
  else if (cred) body.credentials = { certificateId: cred };

  if (!editing && !(await confirmNewOrReplace('backend', `/backends/${enc(id)}`, id, ctx))) return null;
  try {
    const { status } = await api('PUT', `/backends/${enc(id)}`, { json: body, ifMatch: editing ? etag : null, signal: ctx.signal });
    return { id, status };
  } catch (err) {
    const where = backendErrorField(err);
    if (where) {
      fields[where].setError(err.message);
      if (where === 'cas' || where === 'names' || where === 'pins') fields[where].wrap.closest('details').open = true;
      fields[where].control.focus();
    }
    throw err;
  }
}

/**
 * For a create form: when the id exists already, the PUT would replace it, so ask first.
 * Resolves to whether to go on.
 */
async function confirmNewOrReplace(kind, path, id, ctx) {
  try {
    await api('GET', path, { signal: ctx.signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return true;
    throw err;
  }
  return confirmAction(`Replace ${kind} ${id}? A ${kind} with this id exists already.`);
}

function notFound(text, href, linkText) {
  return h('div', { className: 'card' },
    h('h1', { tabindex: '-1', 'data-page-heading': true }, 'Not found'),
    h('p', null, text),
    link(linkText, href, { className: 'button' }));
}

// ---- APIs -------------------------------------------------------------------------------

async function pageApis(ctx) {
  if (ctx.query.has('new')) return pageApiForm(ctx);
  const add = link('+ Add API', '#/apis?new', { className: 'button primary', 'data-testid': 'add-api' });
  const table = dataTable({
    caption: 'APIs', testid: 'apis-table', size: 'medium',
    columns: [{ label: 'Id' }, { label: 'Path' }, { label: 'Backend' }, { label: 'Actions', hidden: true }],
  });
  setChildren(ctx.root,
    pageHeader('APIs', 'Routes: a request whose path is an API’s path, or starts with it and a slash, goes to that API’s backend. The longest path wins. Open an API for its Design view: gateway credentials and policy.', add),
    table.element);

  const load = async () => {
    table.loading();
    let apis;
    try {
      apis = (await api('GET', '/apis', { signal: ctx.signal })).data.value || [];
    } catch (err) {
      if (isAbort(err)) return;
      table.failed('The APIs could not be loaded.');
      throw err;
    }
    if (!apis.length) {
      table.empty('No APIs yet. Add one with + Add API.');
      return;
    }
    table.rows(apis.map((a) => apiRow(a, ctx, load)));
  };
  await load();
}

function apiRow(a, ctx, reload) {
  const del = h('button', {
    type: 'button', className: 'button small danger', 'data-testid': `delete-api-${a.id}`,
    'aria-label': `Delete ${a.id}`,
  }, 'Delete');
  del.addEventListener('click', safe(async () => {
    if (await deleteApi(a.id, ctx)) await reload();
  }));
  // The id link comes first in the row: it opens the Design view.
  return h('tr', { 'data-testid': `api-row-${a.id}` },
    h('th', { scope: 'row' }, link(a.id, routeHref('apis', a.id))),
    h('td', null, h('code', null, a.path)),
    h('td', null, link(a.backendId, routeHref('backends', a.backendId))),
    h('td', { className: 'actions' },
      link('Design', routeHref('apis', a.id), { className: 'button small', 'aria-label': `Design ${a.id}` }),
      ' ',
      link('Test', `#/test?api=${enc(a.id)}`, { className: 'button small', 'data-testid': `test-api-${a.id}`, 'aria-label': `Test ${a.id}` }),
      del));
}

async function deleteApi(id, ctx) {
  if (!confirmAction(`Delete API ${id}? Its route and its policy are removed; requests to its path get 404 from the next request on.`)) return false;
  await api('DELETE', `/apis/${enc(id)}`, { signal: ctx.signal });
  showStatus(`API ${id} deleted.`);
  return true;
}

function backendOptions(select, backends, selected) {
  const options = [option('', backends.length ? 'Choose a backend…' : 'No backends yet', !selected)];
  for (const b of backends) options.push(option(b.id, `${b.id} — ${b.url}`, b.id === selected));
  if (selected && !backends.some((b) => b.id === selected)) options.push(option(selected, `${selected} (missing)`, true));
  setChildren(select, options);
  options[0].disabled = true;
}

async function pageApiForm(ctx) {
  const fields = {
    id: field({
      id: 'api-id', label: 'Id', errorTestid: 'field-error-api-id',
      control: textInput({ maxLength: 80 }),
      hint: '1 to 80 characters: letters, digits, dot, underscore, hyphen.',
    }),
    path: field({
      id: 'api-path', label: 'Path', errorTestid: 'field-error-api-path',
      control: textInput({ placeholder: '/orders' }),
      hint: 'Requests for this path, or below it (/orders/…), go to the backend.',
    }),
    backend: field({
      id: 'api-backend', label: 'Backend', errorTestid: 'field-error-api-backend',
      control: h('select', null, option('', 'Loading…', true)),
    }),
  };
  const save = h('button', { type: 'submit', className: 'button primary', 'data-testid': 'api-save' }, 'Create');
  const noBackends = h('p', { className: 'notice', hidden: true },
    'There are no backends yet: ', link('add a backend', '#/backends?new'), ' first.');
  const body = h('fieldset', { className: 'plain', disabled: true },
    fields.id.wrap, fields.path.wrap, fields.backend.wrap, noBackends,
    h('div', { className: 'button-row' }, save,
      link('Cancel', '#/apis', { className: 'button', 'data-testid': 'api-cancel' })));
  const form = h('form', { className: 'form card', novalidate: true, 'data-testid': 'api-form' }, body);
  setChildren(ctx.root,
    h('p', { className: 'breadcrumb' }, link('APIs', '#/apis'), ' / New'),
    pageHeader('New API', 'A route from a path to a backend. Gateway credentials and the policy are set in its Design view.'),
    form);

  const backends = (await api('GET', '/backends', { signal: ctx.signal })).data.value || [];
  backendOptions(fields.backend.control, backends, '');
  noBackends.hidden = backends.length > 0;
  body.disabled = false;
  ctx.focusAfterLoad(fields.id.control);

  onSubmit(form, save, 'Saving…', async () => {
    clearAlert();
    clearErrors(fields);
    const id = fields.id.control.value.trim();
    if (!id) fields.id.setError('Enter an id for the API.');
    else if (/^\.+$/.test(id)) fields.id.setError('An id made only of dots cannot be used from a browser; choose another.');
    if (!fields.path.control.value.trim()) fields.path.setError('Enter the path, starting with /, e.g. /orders.');
    if (!fields.backend.control.value) fields.backend.setError('Choose the backend requests go to.');
    const invalid = Object.values(fields).find((f) => f.control.getAttribute('aria-invalid') === 'true');
    if (invalid) {
      invalid.control.focus();
      return;
    }
    if (!(await confirmNewOrReplace('API', `/apis/${enc(id)}`, id, ctx))) return;
    const res = await putApi(id, fields, null, ctx);
    navigate('#/apis', { flash: `API ${id} ${res.status === 201 ? 'created' : 'saved'}.` });
  });
}

/** PUT /apis/{id} from a path and a backend field; field errors go next to them. */
async function putApi(id, fields, etag, ctx) {
  const body = { path: fields.path.control.value.trim(), backendId: fields.backend.control.value };
  try {
    return await api('PUT', `/apis/${enc(id)}`, { json: body, ifMatch: etag, signal: ctx.signal });
  } catch (err) {
    const where = err instanceof ApiError
      ? { InvalidId: 'id', BackendNotFound: 'backend', PathConflict: 'path', InvalidRequest: 'path' }[err.code]
      : null;
    if (where && fields[where]) {
      fields[where].setError(err.message);
      fields[where].control.focus();
    }
    throw err;
  }
}

// ---- API Design view --------------------------------------------------------------------

async function pageDesign(ctx, id) {
  const state = { api: null, etag: null, xml: '', certificates: [], backends: [] };

  // Route: path and backend.
  const route = {
    path: field({
      id: 'design-path', label: 'Path', errorTestid: 'field-error-design-path',
      control: textInput(), hint: 'Requests for this path, or below it, go to the backend.',
    }),
    backend: field({
      id: 'design-backend', label: 'Backend', errorTestid: 'field-error-design-backend',
      control: h('select', null, option('', 'Loading…', true)),
    }),
  };
  const routeSave = h('button', { type: 'submit', className: 'button', 'data-testid': 'route-save' }, 'Save route');
  const routeForm = h('form', { novalidate: true, 'data-testid': 'design-route-form' },
    route.path.wrap, route.backend.wrap, h('div', { className: 'button-row' }, routeSave));

  // Backend: gateway credentials through the policy's <authentication-certificate>.
  const credentials = field({
    id: 'design-credentials', label: 'Gateway credentials',
    control: h('select', null, option('none', 'None', true), option('certificate', 'Client certificate')),
    hint: 'What the gateway presents to the backend when it calls it for this API. None: the backend’s own setting applies.',
  });
  const certificate = field({
    id: 'design-certificate', label: 'Client certificate', errorTestid: 'field-error-design-certificate',
    control: h('select', null),
  });
  const noCertificates = h('p', { className: 'notice', hidden: true },
    'No client certificates are uploaded yet: ', link('add one', '#/certificates'), ' first.');
  const certificateBlock = h('div', { hidden: true }, certificate.wrap, noCertificates);
  const effective = h('p', { className: 'notice', 'data-testid': 'design-effective' }, 'Loading…');
  const designSave = h('button', { type: 'submit', className: 'button primary', 'data-testid': 'design-save' }, 'Save');
  const designForm = h('form', { novalidate: true },
    credentials.wrap, certificateBlock, effective,
    h('div', { className: 'button-row' }, designSave,
      h('span', { className: 'muted' }, 'Takes effect from the next call.')));
  credentials.control.addEventListener('change', () => {
    certificateBlock.hidden = credentials.control.value !== 'certificate';
  });

  // Policy editor.
  const editor = h('textarea', {
    className: 'policy-editor', spellcheck: false, autocapitalize: 'off', autocomplete: 'off',
    wrap: 'off', rows: 20, 'data-testid': 'policy-editor',
  });
  const policyField = field({
    id: 'policy-editor', label: 'Policy XML', control: editor,
    hint: 'Azure API Management’s shape: <policies> with <inbound>, <backend>, <outbound>, <on-error>. Supported inside <inbound>: <base />, <authentication-certificate certificate-id="…" /> or thumbprint="…", <validate-client-certificate>.',
  });
  const caret = h('span', { 'data-testid': 'policy-caret', 'aria-live': 'off' }, 'Line 1, column 1');
  const dirty = h('span', null, '');
  const policyError = h('div', { className: 'policy-error', id: 'policy-error', 'data-testid': 'policy-error' });
  editor.setAttribute('aria-describedby', `${editor.getAttribute('aria-describedby')} policy-error`);
  const policySave = h('button', { type: 'submit', className: 'button primary', 'data-testid': 'policy-save' }, 'Save policy');
  const policyRevert = h('button', { type: 'button', className: 'button', 'data-testid': 'policy-revert' }, 'Revert');
  const policyDelete = h('button', { type: 'button', className: 'button danger', 'data-testid': 'policy-delete' }, 'Remove policy');
  const policyForm = h('form', { novalidate: true },
    policyField.wrap,
    h('div', { className: 'editor-meta' }, caret, dirty),
    policyError,
    h('div', { className: 'button-row' }, policySave, policyRevert, h('span', { className: 'spacer' }), policyDelete));

  const testLink = link('Test this API', `#/test?api=${enc(id)}`, { className: 'button', 'data-testid': 'design-test' });
  const deleteButton = h('button', { type: 'button', className: 'button danger', 'data-testid': 'design-delete' }, 'Delete API');
  const subtitle = h('p', { className: 'lead' }, 'Loading…');
  const all = h('fieldset', { className: 'plain', disabled: true },
    h('section', { className: 'card' }, h('h2', null, 'Route'), routeForm),
    h('section', { className: 'card' }, h('h2', null, 'Backend'), designForm),
    h('section', { className: 'card' }, h('h2', null, 'Policy'), policyForm));
  setChildren(ctx.root,
    h('div', { 'data-testid': 'design-view' },
      h('p', { className: 'breadcrumb' }, link('APIs', '#/apis'), ' / ', id),
      h('div', { className: 'page-header' },
        h('div', null, h('h1', { tabindex: '-1', 'data-page-heading': true }, `API ${id}`), subtitle),
        h('div', { className: 'page-actions' }, testLink, deleteButton)),
      all));

  // What the editor and the selects show always follows the stored policy.
  const showPolicy = (xml, etag) => {
    state.xml = typeof xml === 'string' ? xml : EMPTY_POLICY;
    if (etag) state.etag = etag;
    editor.value = state.xml;
    policyError.replaceChildren();
    editor.removeAttribute('aria-invalid');
    updateDirty();
    showBinding();
  };
  const updateDirty = () => {
    dirty.textContent = editor.value !== state.xml ? 'Unsaved changes' : '';
  };
  const updateCaret = () => {
    const { line, column } = lineColumnOf(editor.value, editor.selectionStart || 0);
    caret.textContent = `Line ${line}, column ${column}`;
  };
  for (const ev of ['keyup', 'click', 'select', 'input', 'focus']) editor.addEventListener(ev, updateCaret);
  editor.addEventListener('input', updateDirty);

  const showBinding = () => {
    const binding = readBinding(state.xml);
    const options = state.certificates.map((c) => option(c.id, `${c.id} — ${c.thumbprint}`));
    let selected = '';
    if (binding && binding.kind === 'id') {
      selected = binding.value;
      if (!state.certificates.some((c) => c.id === binding.value)) options.push(option(binding.value, `${binding.value} (not uploaded)`));
    } else if (binding && binding.kind === 'thumbprint') {
      const t = binding.value.toUpperCase();
      const match = state.certificates.find((c) => c.thumbprint.toUpperCase() === t);
      if (match) selected = match.id;
      else {
        selected = `thumbprint:${t}`;
        options.push(option(selected, `Thumbprint ${t} (no uploaded certificate has it)`));
      }
    }
    setChildren(certificate.control, options);
    if (selected) certificate.control.value = selected;
    credentials.control.value = binding ? 'certificate' : 'none';
    certificateBlock.hidden = !binding;
    noCertificates.hidden = options.length > 0;
    showEffective(binding);
  };
  const showEffective = (binding) => {
    const backend = state.backends.find((b) => state.api && b.id === state.api.backendId);
    if (binding) {
      const c = binding.kind === 'id'
        ? state.certificates.find((x) => x.id === binding.value)
        : state.certificates.find((x) => x.thumbprint.toUpperCase() === binding.value.toUpperCase());
      setChildren(effective, 'Now: this API’s policy presents ',
        h('code', null, binding.value), c && binding.kind === 'id' ? [' (thumbprint ', h('code', null, c.thumbprint), ')'] : null,
        c && binding.kind === 'thumbprint' ? [' (certificate ', h('code', null, c.id), ')'] : null,
        '; it overrides the backend’s credentials.');
      return;
    }
    if (!backend) {
      setChildren(effective, 'Now: no certificate from this API’s policy.');
      return;
    }
    setChildren(effective, 'Now: no certificate from this API’s policy; the backend ',
      link(backend.id, routeHref('backends', backend.id)), ' presents ',
      backend.credentials ? credentialsText(backend.credentials) : 'none', '.');
  };

  // Load everything the view shows.
  try {
    const [apiRes, backends, certs, policy] = await Promise.all([
      api('GET', `/apis/${enc(id)}`, { signal: ctx.signal }),
      api('GET', '/backends', { signal: ctx.signal }),
      api('GET', '/certificates', { signal: ctx.signal }),
      api('GET', `/apis/${enc(id)}/policy`, { signal: ctx.signal }),
    ]);
    state.api = apiRes.data;
    state.backends = backends.data.value || [];
    state.certificates = certs.data.value || [];
    state.etag = policy.etag || apiRes.etag;
    showRoute();
    showPolicy(policy.data, policy.etag);
  } catch (err) {
    if (isAbort(err)) return;
    if (err instanceof ApiError && err.status === 404) {
      setChildren(ctx.root, notFound(`API ${id} does not exist.`, '#/apis', 'Back to APIs'));
      return;
    }
    throw err;
  }
  all.disabled = false;

  function showRoute() {
    route.path.control.value = state.api.path;
    backendOptions(route.backend.control, state.backends, state.api.backendId);
    setChildren(subtitle, 'Path ', h('code', null, state.api.path), ' → backend ',
      link(state.api.backendId, routeHref('backends', state.api.backendId)));
  }

  /** After a write that answers no ETag (DELETE): read the policy (and its tag) again. */
  const reloadPolicy = async () => {
    const res = await api('GET', `/apis/${enc(id)}/policy`, { signal: ctx.signal });
    showPolicy(res.data, res.etag);
  };

  onSubmit(routeForm, routeSave, 'Saving…', async () => {
    clearAlert();
    clearErrors(route);
    if (!route.path.control.value.trim()) {
      route.path.setError('Enter the path, starting with /, e.g. /orders.');
      route.path.control.focus();
      return;
    }
    const res = await putApi(id, route, state.etag, ctx);
    state.api = res.data && typeof res.data === 'object' ? res.data : { ...state.api, path: route.path.control.value.trim(), backendId: route.backend.control.value };
    if (res.etag) state.etag = res.etag;
    showRoute();
    showEffective(readBinding(state.xml));
    showStatus(`Route of API ${id} saved.`);
  });

  onSubmit(designForm, designSave, 'Saving…', async () => {
    clearAlert();
    certificate.setError('');
    let binding = null;
    if (credentials.control.value === 'certificate') {
      const value = certificate.control.value;
      if (!value) {
        certificate.setError('Choose the client certificate to present (upload one under Client certificates).');
        certificate.control.focus();
        return;
      }
      binding = value.startsWith('thumbprint:')
        ? { kind: 'thumbprint', value: value.slice('thumbprint:'.length) }
        : { kind: 'id', value };
      // A policy that names this certificate by thumbprint keeps doing so.
      const before = readBinding(state.xml);
      const chosen = state.certificates.find((c) => c.id === value);
      if (before && before.kind === 'thumbprint' && chosen && chosen.thumbprint.toUpperCase() === before.value.toUpperCase()) binding = before;
    }
    if (editor.value !== state.xml &&
        !confirmAction('The policy editor has unsaved changes. Saving the gateway credentials starts from the stored policy and discards them. Go on?')) {
      return;
    }
    const xml = withBinding(state.xml, binding);
    try {
      if (!binding && isEmptyPolicy(xml)) {
        // Nothing left but the skeleton: remove the policy, as if it never had one.
        await api('DELETE', `/apis/${enc(id)}/policy`, { ifMatch: state.etag, signal: ctx.signal });
        await reloadPolicy();
      } else {
        const res = await api('PUT', `/apis/${enc(id)}/policy`, { xml, ifMatch: state.etag, signal: ctx.signal });
        showPolicy(typeof res.data === 'string' && res.data ? res.data : xml, res.etag);
      }
    } catch (err) {
      if (err instanceof ApiError && (err.code === 'CertificateNotFound' || err.code === 'InvalidPolicy')) certificate.setError(err.message);
      throw err;
    }
    showStatus(binding
      ? `API ${id} now presents ${binding.value} to its backend, from the next call.`
      : `API ${id} presents no certificate of its own any more, from the next call.`);
  });

  onSubmit(policyForm, policySave, 'Saving…', async () => {
    clearAlert();
    policyError.replaceChildren();
    editor.removeAttribute('aria-invalid');
    const xml = editor.value;
    try {
      const res = await api('PUT', `/apis/${enc(id)}/policy`, { xml, ifMatch: state.etag, signal: ctx.signal });
      showPolicy(typeof res.data === 'string' && res.data ? res.data : xml, res.etag);
      showStatus(`Policy of API ${id} saved; it applies from the next call.`);
    } catch (err) {
      if (err instanceof ApiError && (err.code === 'InvalidPolicy' || err.code === 'CertificateNotFound')) {
        showPolicyError(err);
      }
      throw err;
    }
  });

  const showPolicyError = (err) => {
    const at = err.details.find((d) => d && Number.isFinite(Number(d.line)));
    const line = at ? Number(at.line) : null;
    const column = at ? Number(at.column) || 1 : null;
    setChildren(policyError,
      h('span', null, err.message, ' ', h('span', { className: 'alert-code' }, `(${err.code})`)),
      line ? h('span', { className: 'where' }, `At line ${line}, column ${column}.`) : null);
    editor.setAttribute('aria-invalid', 'true');
    if (line) {
      moveCaret(editor, line, column);
      updateCaret();
    }
  };

  policyRevert.addEventListener('click', () => {
    showPolicy(state.xml);
    showStatus('The editor shows the stored policy again.');
  });

  policyDelete.addEventListener('click', safe(busy(policyDelete, 'Removing…', async () => {
    clearAlert();
    if (!confirmAction(`Remove the policy of API ${id}? Its gateway credentials and client-certificate checks go; the backend’s credentials apply from the next call.`)) return;
    await api('DELETE', `/apis/${enc(id)}/policy`, { ifMatch: state.etag, signal: ctx.signal });
    await reloadPolicy();
    showStatus(`Policy of API ${id} removed.`);
  })));

  deleteButton.addEventListener('click', safe(async () => {
    clearAlert();
    if (await deleteApi(id, ctx)) navigate('#/apis', { flash: `API ${id} deleted.` });
  }));
}

// ---- test call --------------------------------------------------------------------------

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD'];

async function pageTest(ctx) {
  const apiSelect = h('select', null, option('', 'Loading…', true));
  const fields = {
    api: field({ id: 'test-api', label: 'API', control: apiSelect }),
    method: field({
      id: 'test-method', label: 'Method',
      control: h('select', null, METHODS.map((m) => option(m, m, m === 'GET'))),
    }),
    path: field({
      id: 'test-path', label: 'Path', errorTestid: 'field-error-test-path',
      control: textInput({ placeholder: '/orders/1' }),
      hint: 'The full request path, starting with the API’s path; a query may follow.',
    }),
    body: field({
      id: 'test-body', label: 'Body',
      control: h('textarea', { rows: 5, className: 'code', spellcheck: false }),
      hint: 'Sent as it is; leave empty for none.',
    }),
  };
  const rows = h('div', { className: 'header-rows' });
  const addHeader = h('button', { type: 'button', className: 'button small', 'data-testid': 'test-add-header' }, '+ Add header');
  let headerCount = 0;
  const headerRow = () => {
    headerCount += 1;
    const n = headerCount;
    const name = field({ id: `test-header-name-${n}`, label: 'Name', control: textInput({ placeholder: 'Accept' }) });
    const value = field({ id: `test-header-value-${n}`, label: 'Value', control: textInput({ placeholder: 'application/json' }) });
    const remove = h('button', {
      type: 'button', className: 'button small subtle remove', 'data-testid': `test-header-remove-${n}`,
      'aria-label': `Remove header row ${n}`,
    }, 'Remove');
    const row = h('div', { className: 'header-row', 'data-header-row': true }, name.wrap, value.wrap, remove);
    remove.addEventListener('click', () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      const focusTarget = next ? next.querySelector('input') : addHeader;
      focusTarget.focus();
    });
    row.headerName = name.control;
    row.headerValue = value.control;
    return row;
  };
  rows.append(headerRow());
  addHeader.addEventListener('click', () => {
    const row = headerRow();
    rows.append(row);
    row.headerName.focus();
  });

  const send = h('button', { type: 'submit', className: 'button primary', 'data-testid': 'test-send' }, 'Send');
  const form = h('form', { novalidate: true, 'data-testid': 'test-form' },
    fields.api.wrap, fields.method.wrap, fields.path.wrap,
    h('fieldset', { 'data-testid': 'test-headers-input' }, h('legend', null, 'Headers'), rows, addHeader),
    fields.body.wrap,
    h('div', { className: 'button-row' }, send));
  const result = h('div', { 'data-testid': 'test-result', 'aria-live': 'polite' },
    h('div', { className: 'result-empty' }, 'Send a request to see the gateway’s answer here: status, time, headers, body and the client certificate presented.'));
  const noApis = h('p', { className: 'notice', hidden: true }, 'There are no APIs yet: ', link('add an API', '#/apis?new'), ' first.');
  setChildren(ctx.root,
    pageHeader('Test', 'Send one request through the gateway, made by the gateway itself with the same routing, certificate binding and TLS as a real one.'),
    noApis,
    h('div', { className: 'test-layout' },
      h('section', { className: 'card' }, h('h2', null, 'Request'), form),
      h('section', { className: 'card' }, h('h2', null, 'Response'), result)));

  const apis = (await api('GET', '/apis', { signal: ctx.signal })).data.value || [];
  const byId = new Map(apis.map((a) => [a.id, a]));
  setChildren(apiSelect, apis.length
    ? apis.map((a) => option(a.id, `${a.id} — ${a.path}`))
    : [option('', 'No APIs yet')]);
  noApis.hidden = apis.length > 0;
  const wanted = ctx.query.get('api');
  if (wanted && byId.has(wanted)) apiSelect.value = wanted;
  const prefill = () => {
    const a = byId.get(apiSelect.value);
    fields.path.control.value = a ? a.path : '';
  };
  prefill();
  apiSelect.addEventListener('change', prefill);

  onSubmit(form, send, 'Sending…', async () => {
    clearAlert();
    fields.path.setError('');
    const id = apiSelect.value;
    if (!id) {
      showAlert(new ApiError(0, 'NoApi', 'Choose an API to test (add one under APIs first).'));
      return;
    }
    const path = fields.path.control.value.trim();
    if (!path.startsWith('/')) {
      fields.path.setError('The path starts with /, and with the API’s path.');
      fields.path.control.focus();
      return;
    }
    const payload = { method: fields.method.control.value, path, headers: [] };
    for (const row of rows.querySelectorAll('[data-header-row]')) {
      const name = row.headerName.value.trim();
      if (name) payload.headers.push([name, row.headerValue.value]);
    }
    if (fields.body.control.value) payload.body = fields.body.control.value;
    setChildren(result, h('div', { className: 'result-empty' }, 'Sending…'));
    try {
      const { data } = await api('POST', `/apis/${enc(id)}/test`, { json: payload, signal: ctx.signal });
      renderTrial(result, data, ctx);
    } catch (err) {
      setChildren(result, h('div', { className: 'result-empty' }, 'The test call was not made: see the message above.'));
      if (err instanceof ApiError && err.code === 'InvalidRequest' && /path/i.test(err.message)) fields.path.setError(err.message);
      throw err;
    }
  });
}

function statusClass(status) {
  const s = Math.floor(Number(status) / 100);
  return s >= 2 && s <= 5 ? `s${s}` : '';
}

function renderTrial(result, t, ctx) {
  const status = Number(t.status);
  const summary = h('div', { className: 'result-summary' },
    h('div', { className: 'stat' },
      h('p', { className: 'stat-label' }, 'Status'),
      h('p', { className: `http-status ${statusClass(status)}`, 'data-testid': 'test-status' },
        `${status}${REASONS[status] ? ` ${REASONS[status]}` : ''}`)),
    h('div', { className: 'stat' },
      h('p', { className: 'stat-label' }, 'Time'),
      h('p', { className: 'stat-value', 'data-testid': 'test-duration' }, `${formatNumber(t.durationMs, 1)} ms`)));

  const cert = h('dl', { className: 'kv' },
    h('dt', null, 'Client certificate presented'),
    h('dd', { 'data-testid': 'test-thumbprint' },
      t.certificateThumbprint ? h('code', null, t.certificateThumbprint) : h('span', { className: 'muted' }, 'None')),
    h('dt', null, 'Certificate id'),
    h('dd', { 'data-testid': 'test-certificate-id' },
      t.certificateId ? link(t.certificateId, '#/certificates') : h('span', { className: 'muted' }, '–')));

  const parts = [summary, cert];
  if (t.error) parts.push(trialError(t.error, ctx));

  const headers = Array.isArray(t.headers) ? t.headers : [];
  const headerTable = dataTable({
    caption: 'Response headers', testid: 'test-headers', size: 'narrow',
    columns: [{ label: 'Name' }, { label: 'Value' }],
  });
  if (headers.length) {
    headerTable.rows(headers.map(([name, value]) => h('tr', null,
      h('td', null, h('code', null, String(name))), h('td', { className: 'subject' }, String(value)))));
  } else headerTable.empty('No headers.');
  parts.push(h('h3', { className: 'section-title' }, 'Headers'), headerTable.element);

  parts.push(h('h3', { className: 'section-title' }, 'Body'));
  const body = typeof t.body === 'string' ? t.body : '';
  parts.push(h('pre', { className: 'body', 'data-testid': 'test-response-body' }, body || '(empty)'));
  if (t.bodyTruncated) {
    parts.push(h('p', { className: 'hint', 'data-testid': 'test-truncated' }, 'The body is longer: only its first 64 KiB are shown.'));
  }
  setChildren(result, parts);
}

/** The gateway's own error for the test call (e.g. BackendTlsError and its reason). */
function trialError(e, ctx) {
  const detail = h('div', null);
  const requestId = typeof e.requestId === 'string' ? e.requestId : null;
  let more = null;
  if (requestId) {
    more = h('button', { type: 'button', className: 'button small', 'data-testid': 'test-request-detail' }, 'Show what failed');
    more.addEventListener('click', safe(busy(more, 'Loading…', async () => {
      const { data } = await api('GET', `/requests/${enc(requestId)}`, { signal: ctx.signal });
      setChildren(detail, h('pre', { className: 'body', 'data-testid': 'test-request-detail-output' }, JSON.stringify(data, null, 2)));
    })));
  }
  return h('div', { className: 'notice warning', 'data-testid': 'test-error' },
    h('p', null, h('strong', null, String(e.code || 'Error')),
      e.reason ? [' — reason ', h('strong', { 'data-testid': 'test-reason' }, String(e.reason))] : null),
    e.message ? h('p', null, String(e.message)) : null,
    requestId ? h('p', null, 'Request id ', h('code', { 'data-testid': 'test-request-id' }, requestId), ' ', more) : null,
    detail);
}

// ==========================================================================================
// Router and shell
// ==========================================================================================

const ROUTES = [
  { re: /^\/signin$/, page: pageSignIn, nav: null, title: 'Sign in', public: true },
  { re: /^\/overview$/, page: pageOverview, nav: 'overview', title: 'Overview' },
  { re: /^\/certificates$/, page: pageCertificates, nav: 'certificates', title: 'Client certificates' },
  { re: /^\/backends$/, page: pageBackends, nav: 'backends', title: 'Backends' },
  { re: /^\/backends\/([^/]+)$/, page: pageBackendForm, nav: 'backends', title: 'Backend' },
  { re: /^\/apis$/, page: pageApis, nav: 'apis', title: 'APIs' },
  { re: /^\/apis\/([^/]+)$/, page: pageDesign, nav: 'apis', title: 'API design' },
  { re: /^\/test$/, page: pageTest, nav: 'test', title: 'Test' },
];

let current = null;
let pendingFlash = null;
let firstRender = true;

function parseHash() {
  const raw = window.location.hash.replace(/^#/, '') || '/overview';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  return { path, query };
}

/** Goes to a route; `flash` is shown in the status region once it has rendered. */
function navigate(hash, { flash = null } = {}) {
  pendingFlash = flash;
  if (window.location.hash === hash) renderRoute();
  else window.location.hash = hash;
}

function updateShell(nav) {
  const signedIn = Boolean(session.token);
  shell.nav.hidden = !signedIn;
  shell.signout.hidden = !signedIn;
  for (const a of shell.nav.querySelectorAll('a[data-nav]')) {
    if (a.getAttribute('data-nav') === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function renderRoute() {
  if (current) {
    current.controller.abort();
    for (const fn of current.cleanups) fn();
    current = null;
  }
  closeAllDialogs();
  clearAlert();
  window.clearTimeout(statusTimer);
  shell.status.textContent = '';

  const { path, query } = parseHash();
  let match = null;
  let params = [];
  for (const route of ROUTES) {
    const m = route.re.exec(path);
    if (m) {
      match = route;
      params = m.slice(1).map((p) => {
        try {
          return decodeURIComponent(p);
        } catch {
          return p;
        }
      });
      break;
    }
  }
  if (!match) {
    window.location.replace('#/overview');
    return;
  }
  if (!match.public && !session.token) {
    returnTo = window.location.hash;
    window.location.replace('#/signin');
    return;
  }
  if (match.public && session.token) {
    window.location.replace('#/overview');
    return;
  }

  updateShell(match.nav);
  document.title = `${match.title}${params[0] ? ` ${params[0]}` : ''} — edgegw console`;
  const root = h('div', { className: 'page' });
  shell.page.replaceChildren(root);
  const controller = new AbortController();
  const state = { controller, cleanups: [] };
  current = state;
  const ctx = {
    root,
    query,
    signal: controller.signal,
    onCleanup: (fn) => state.cleanups.push(fn),
    report: (err) => { if (!controller.signal.aborted) reportError(err); },
    focusAfterRender: null,
    /** Focus a field once data is in, unless the user has moved focus meanwhile. */
    focusAfterLoad: (el) => {
      if (controller.signal.aborted) return;
      const active = document.activeElement;
      if (!active || active === document.body || active.hasAttribute('data-page-heading')) el.focus();
    },
  };
  if (pendingFlash) {
    showStatus(pendingFlash);
    pendingFlash = null;
  }
  const done = match.page(ctx, ...params);
  // Move focus to the new page (its heading, or the field it names) so keyboard and
  // screen-reader users start there; not on the first load.
  const target = ctx.focusAfterRender || root.querySelector('[data-page-heading]');
  if (target && (!firstRender || match.public)) target.focus();
  firstRender = false;
  try {
    await done;
  } catch (err) {
    if (!controller.signal.aborted) reportError(err);
  }
}

function boot() {
  shell.alert = document.getElementById('alert');
  shell.status = document.getElementById('status');
  shell.page = document.getElementById('page');
  shell.nav = document.getElementById('nav');
  shell.signout = document.getElementById('signout');

  onUnauthorized = () => {
    // Every page's 401 ends the session and goes back to sign-in, returning here after.
    // Several calls of one page may fail at once: only the first sends the user away.
    if (window.location.hash === '#/signin') return;
    returnTo = window.location.hash;
    pendingFlash = 'The gateway did not accept the token (it may have changed): sign in again.';
    window.location.hash = '#/signin';
  };

  shell.signout.addEventListener('click', () => {
    session.clear();
    returnTo = null;
    navigate('#/signin', { flash: 'You are signed out; the token is forgotten.' });
  });
  document.getElementById('skip-link').addEventListener('click', () => {
    const heading = shell.page.querySelector('[data-page-heading]') || document.getElementById('main');
    heading.focus();
  });
  window.addEventListener('hashchange', () => { renderRoute(); });
  // Anything that still escapes is shown rather than lost (and never left uncaught).
  window.addEventListener('unhandledrejection', (e) => {
    e.preventDefault();
    reportError(e.reason);
  });
  renderRoute();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
