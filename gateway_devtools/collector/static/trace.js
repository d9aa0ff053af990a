// The trace page: lists recent traces from GET /api/v2/traces and draws one as a waterfall.
// Plain DOM, no build step and no network beyond the collector itself (the machines it runs on are offline).
"use strict";

const API = "/api/v2";
const REFRESH_MS = 3000;
// Tableau 10 without its red, which is kept for errors, plus four lighter tones.
const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
  "#9c755f", "#ff9da7", "#86bcb6", "#8cd17d", "#a0cbe8", "#d4a6c8",
];
const INDENT_PX = 16;

const state = {
  services: [],
  refreshTimer: null,
  trace: null,        // {id, spans, tree}
  collapsed: new Set(),
  selected: null,     // node key
};

const $ = (id) => document.getElementById(id);

// --- small helpers -----------------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// replaceChildren that skips absent children, as el() does.
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false));
}

function formatDuration(us) {
  if (us === null || us === undefined) return "–";
  if (us === 0) return "0ms";
  if (us < 1000) return `${Math.round(us)}µs`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(us < 10_000 ? 2 : us < 100_000 ? 1 : 0)}ms`;
  return `${(us / 1_000_000).toFixed(us < 10_000_000 ? 2 : 1)}s`;
}

function formatClock(us) {
  const date = new Date(us / 1000);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function formatAgo(us) {
  const seconds = Math.max(0, Math.round(Date.now() - us / 1000) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return new Date(us / 1000).toLocaleDateString();
}

function serviceOf(span) {
  return (span.localEndpoint && span.localEndpoint.serviceName) || "unknown";
}

function colourFor(service) {
  const index = state.services.indexOf(service);
  if (index >= 0 && index < PALETTE.length) return PALETTE[index];
  if (index >= 0) return `hsl(${(index * 137) % 360}, 45%, 55%)`;
  let hash = 0;
  for (const char of service) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function isError(span) {
  return Boolean(span.tags && Object.prototype.hasOwnProperty.call(span.tags, "error"));
}

function endpointText(endpoint) {
  if (!endpoint) return null;
  const address = endpoint.ipv4 || (endpoint.ipv6 ? `[${endpoint.ipv6}]` : "");
  const where = address ? `${address}${endpoint.port ? `:${endpoint.port}` : ""}` : endpoint.port ? `port ${endpoint.port}` : "";
  return [endpoint.serviceName, where].filter(Boolean).join(" · ");
}

async function fetchJson(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

// --- trace structure ---------------------------------------------------------------------------------------------

// Nest spans as Zipkin's UI does: a span's children are the spans naming it as parent; a shared (server-side) span
// with the same id as a client span hangs under that client span, and children prefer the shared span as parent.
function buildTree(spans) {
  const nodes = spans.map((span, index) => ({ key: `${span.id}:${span.shared ? "s" : ""}:${index}`, span, children: [], orphan: false }));
  const byId = new Map();
  for (const node of nodes) {
    const entry = byId.get(node.span.id) || {};
    if (node.span.shared) entry.shared = entry.shared || node;
    else entry.plain = entry.plain || node;
    byId.set(node.span.id, entry);
  }
  const roots = [];
  for (const node of nodes) {
    let parent = null;
    const sameId = byId.get(node.span.id);
    if (node.span.shared && sameId.plain) parent = sameId.plain;
    else if (node.span.parentId) {
      const entry = byId.get(node.span.parentId);
      parent = entry ? entry.shared || entry.plain : null;
      node.orphan = !entry;
    }
    if (parent && parent !== node) parent.children.push(node);
    else roots.push(node);
  }
  // Spans caught in a parent cycle are reachable from no root: show them as roots rather than lose them.
  const reached = new Set();
  const visit = (node) => {
    if (reached.has(node)) return;
    reached.add(node);
    node.children.forEach(visit);
  };
  roots.forEach(visit);
  for (const node of nodes) {
    if (!reached.has(node)) {
      node.orphan = true;
      roots.push(node);
      visit(node);
    }
  }
  const byStart = (a, b) => (a.span.timestamp || Infinity) - (b.span.timestamp || Infinity);
  for (const node of nodes) node.children.sort(byStart);
  roots.sort((a, b) => (a.orphan - b.orphan) || byStart(a, b));
  return roots;
}

function flatten(roots, collapsed) {
  const rows = [];
  const walk = (node, depth, parentStart) => {
    const start = node.span.timestamp || parentStart;
    rows.push({ node, depth, start });
    if (collapsed.has(node.key)) return;
    for (const child of node.children) walk(child, depth + 1, start);
  };
  for (const root of roots) walk(root, 0, null);
  return rows;
}

function countDescendants(node) {
  return node.children.reduce((sum, child) => sum + 1 + countDescendants(child), 0);
}

function summarise(spans) {
  const ids = new Set(spans.map((span) => span.id));
  const timed = spans.filter((span) => span.timestamp);
  const start = timed.length ? Math.min(...timed.map((span) => span.timestamp)) : null;
  const end = timed.length ? Math.max(...timed.map((span) => span.timestamp + (span.duration || 0))) : null;
  const roots = spans.filter((span) => !span.parentId);
  const root = roots.sort((a, b) => (a.timestamp || Infinity) - (b.timestamp || Infinity))[0]
    || [...timed].sort((a, b) => a.timestamp - b.timestamp)[0] || spans[0];
  const services = [...new Set(spans.map(serviceOf))].sort();
  return {
    traceId: spans[0].traceId,
    root,
    start,
    duration: start === null ? null : Math.max(end - start, 1),
    spanCount: spans.length,
    services,
    errors: spans.filter(isError).length,
    missingParents: spans.filter((span) => span.parentId && !ids.has(span.parentId)).length,
    depth: 0,
  };
}

// --- the list of traces ------------------------------------------------------------------------------------------

function listQuery() {
  const params = new URLSearchParams({ limit: $("filter-limit").value });
  const service = $("filter-service").value;
  if (service) params.set("serviceName", service);
  const minMs = parseFloat($("filter-min").value);
  if (minMs > 0) params.set("minDuration", String(Math.max(1, Math.round(minMs * 1000))));
  if ($("filter-errors").checked) params.set("annotationQuery", "error");
  return params;
}

async function refreshList() {
  try {
    const [services, traces, stats] = await Promise.all([
      fetchJson(`${API}/services`),
      fetchJson(`${API}/traces?${listQuery()}`),
      fetchJson(`${API}/_stats`),
    ]);
    state.services = services;
    renderServiceFilter(services);
    renderStats(stats);
    renderTraceList(traces);
    showBanner(null);
  } catch (error) {
    showBanner(`Cannot reach the collector: ${error.message}`);
  }
}

function renderStats(stats) {
  fill($("stats"),
    el("span", {}, el("strong", {}, stats.traces.toLocaleString()), " traces"),
    el("span", {}, el("strong", {}, stats.spans.toLocaleString()), " spans"),
    stats.requestsRejected ? el("span", { class: "stat-warn", title: stats.lastRejection || "" },
      el("strong", {}, stats.requestsRejected.toLocaleString()), " rejected") : null,
  );
}

function renderServiceFilter(services) {
  const select = $("filter-service");
  const current = select.value;
  const wanted = ["", ...services];
  const have = [...select.options].map((option) => option.value);
  if (wanted.join("\n") === have.join("\n")) return;
  select.replaceChildren(el("option", { value: "" }, "All services"), ...services.map((s) => el("option", { value: s }, s)));
  select.value = wanted.includes(current) ? current : "";
}

function renderTraceList(traces) {
  const summaries = traces.map(summarise);
  const longest = Math.max(1, ...summaries.map((s) => s.duration || 0));
  fill($("trace-rows"), ...summaries.map((summary) => traceRow(summary, longest)));
  $("empty").hidden = summaries.length > 0;
  $("traces").hidden = summaries.length === 0;
}

function traceRow(summary, longest) {
  const open = () => { location.hash = `trace=${summary.traceId}`; };
  const rootService = serviceOf(summary.root);
  return el("tr", { class: "trace-row", tabindex: "0", dataset: { traceId: summary.traceId }, onclick: open,
    onkeydown: (event) => { if (event.key === "Enter") open(); } },
    el("td", { class: "col-start" },
      summary.start ? el("div", {}, formatClock(summary.start)) : "–",
      summary.start ? el("div", { class: "muted small" }, formatAgo(summary.start)) : null),
    el("td", { class: "col-root" },
      el("div", { class: "root-line" },
        el("span", { class: "service-dot", style: { background: colourFor(rootService) } }),
        el("span", { class: "root-service" }, rootService),
        el("span", { class: "root-name" }, summary.root.name || "(unnamed)"),
        summary.errors ? el("span", { class: "badge badge-error" }, `${summary.errors} error${summary.errors > 1 ? "s" : ""}`) : null,
        summary.missingParents ? el("span", { class: "badge badge-warn", title: "Some spans name a parent that never arrived" }, "partial") : null),
      el("div", { class: "muted small mono" }, summary.traceId)),
    el("td", { class: "col-services" },
      el("div", { class: "chips" }, summary.services.map((service) =>
        el("span", { class: "chip" }, el("span", { class: "service-dot", style: { background: colourFor(service) } }), service)))),
    el("td", { class: "col-spans num" }, summary.spanCount),
    el("td", { class: "col-duration" },
      el("div", { class: "duration-cell" },
        el("span", { class: "duration-text" }, formatDuration(summary.duration)),
        el("span", { class: "duration-track" },
          el("span", { class: "duration-fill", style: { width: `${((summary.duration || 0) / longest) * 100}%` } })))));
}

// --- one trace ---------------------------------------------------------------------------------------------------

async function showTrace(traceId) {
  $("list-view").hidden = true;
  $("trace-view").hidden = false;
  hideTooltip();
  let spans;
  try {
    [spans, state.services] = await Promise.all([
      fetchJson(`${API}/trace/${encodeURIComponent(traceId)}`),
      fetchJson(`${API}/services`),
    ]);
    showBanner(null);
  } catch (error) {
    showBanner(`Cannot load trace ${traceId}: ${error.message}`);
    return;
  }
  if (!spans) {
    fill($("trace-header"), el("h1", {}, "Trace not found"),
      el("p", { class: "muted" }, `No trace ${traceId} in the collector: it may have been evicted, or not arrived yet.`));
    fill($("legend"));
    fill($("waterfall"));
    $("detail").hidden = true;
    return;
  }
  if (!state.trace || state.trace.id !== traceId) {
    state.collapsed = new Set();
    state.selected = null;
  }
  state.trace = { id: traceId, spans, tree: buildTree(spans) };
  renderTrace();
}

function renderTrace() {
  const { spans, tree } = state.trace;
  const summary = summarise(spans);
  const rows = flatten(tree, state.collapsed);
  summary.depth = 1 + Math.max(0, ...flatten(tree, new Set()).map((row) => row.depth));
  renderTraceHeader(summary);
  renderLegend(summary.services);
  renderWaterfall(rows, summary);
  const selected = rows.find((row) => row.node.key === state.selected);
  if (selected) renderDetail(selected.node, summary);
  else $("detail").hidden = true;
}

function renderTraceHeader(summary) {
  const rootService = serviceOf(summary.root);
  const facts = [
    ["Start", summary.start ? `${new Date(summary.start / 1000).toLocaleDateString()} ${formatClock(summary.start)}` : "–"],
    ["Duration", formatDuration(summary.duration)],
    ["Spans", summary.spanCount],
    ["Services", summary.services.length],
    ["Depth", summary.depth],
  ];
  fill($("trace-header"),
    el("div", { class: "trace-title" },
      el("span", { class: "service-dot large", style: { background: colourFor(rootService) } }),
      el("h1", {}, el("span", { class: "root-service" }, rootService), " ", summary.root.name || "(unnamed)"),
      summary.errors ? el("span", { class: "badge badge-error" }, `${summary.errors} error${summary.errors > 1 ? "s" : ""}`) : null,
      summary.missingParents ? el("span", { class: "badge badge-warn", id: "partial-badge",
        title: "Some spans name a parent span that is not in this trace: it was not reported, was dropped, or has not arrived yet." },
        `Partial trace · ${summary.missingParents} span${summary.missingParents > 1 ? "s" : ""} without parent`) : null),
    el("div", { class: "trace-id" },
      el("span", { class: "muted" }, "Trace ID "), el("span", { class: "mono", id: "trace-id" }, summary.traceId),
      el("a", { class: "json-link", href: `${API}/trace/${summary.traceId}`, target: "_blank", rel: "noopener" }, "JSON")),
    el("dl", { class: "facts" }, facts.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value)))),
  );
}

function renderLegend(services) {
  fill($("legend"), ...services.map((service) =>
    el("span", { class: "legend-item", dataset: { service } },
      el("span", { class: "legend-swatch", style: { background: colourFor(service) } }), service)));
}

function axisTicks(duration) {
  return [0, 0.25, 0.5, 0.75, 1].map((fraction) => ({ fraction, label: formatDuration(duration * fraction) }));
}

function renderWaterfall(rows, summary) {
  const start = summary.start || 0;
  const total = summary.duration || 1;
  const ticks = axisTicks(total);
  const header = el("div", { class: "wf-row wf-head" },
    el("div", { class: "wf-name" }, "Service · span"),
    el("div", { class: "wf-timeline" }, el("div", { class: "wf-track" }, ticks.map((tick) =>
      el("span", { class: `wf-tick${tick.fraction === 0 ? " first" : tick.fraction === 1 ? " last" : ""}`,
        style: { left: `${tick.fraction * 100}%` } }, tick.label)))));
  const grid = el("div", { class: "wf-grid", "aria-hidden": "true" },
    ticks.map((tick) => el("span", { style: { left: `${tick.fraction * 100}%` } })));
  const body = el("div", { class: "wf-body" }, grid, rows.map((row) => waterfallRow(row, start, total)));
  fill($("waterfall"), header, body);
}

function waterfallRow(row, traceStart, total) {
  const { node, depth } = row;
  const span = node.span;
  const service = serviceOf(span);
  const error = isError(span);
  const timed = Boolean(span.timestamp);
  const offset = timed ? span.timestamp - traceStart : (row.start || traceStart) - traceStart;
  const left = Math.min(100, Math.max(0, (offset / total) * 100));
  const width = timed ? Math.min(100 - left, ((span.duration || 0) / total) * 100) : 0;
  const hasChildren = node.children.length > 0;
  const collapsed = state.collapsed.has(node.key);
  const toggle = hasChildren
    ? el("button", { class: `wf-toggle${collapsed ? " collapsed" : ""}`, type: "button",
      title: collapsed ? `Expand ${countDescendants(node)} hidden spans` : "Collapse",
      "aria-expanded": String(!collapsed),
      onclick: (event) => { event.stopPropagation(); toggleNode(node.key); } })
    : el("span", { class: "wf-toggle-space" });
  const label = `${formatDuration(span.duration)}${collapsed ? ` · +${countDescendants(node)} hidden` : ""}`;
  // The duration goes after the bar, else before it, else (a bar filling the axis) inside its end.
  const end = left + width;
  const [labelClass, labelStyle] = end <= 82 ? ["", { left: `${end}%` }]
    : left >= 14 ? [" on-left", { right: `${100 - left}%` }]
      : [" inside", { right: `${100 - end}%` }];
  const bar = el("div", {
    class: `wf-bar${error ? " error" : ""}${timed ? "" : " untimed"}`,
    dataset: { service },
    style: { left: `${left}%`, width: `${width}%`, background: error ? null : colourFor(service) },
  }, (span.annotations || []).filter(() => timed && span.duration).map((annotation) =>
    el("span", { class: "wf-annotation", title: annotation.value,
      style: { left: `${Math.min(100, Math.max(0, ((annotation.timestamp - span.timestamp) / span.duration) * 100))}%` } })));
  const kind = span.kind ? el("span", { class: `kind kind-${span.kind.toLowerCase()}` }, span.kind.toLowerCase()) : null;
  return el("div", {
    class: `wf-row span-row${error ? " error" : ""}${node.orphan ? " orphan" : ""}${state.selected === node.key ? " selected" : ""}`,
    dataset: { spanId: span.id, parentId: span.parentId || "", depth: String(depth), service, key: node.key },
    onclick: () => selectNode(node.key),
    onmousemove: (event) => showTooltip(event, span, offset),
    onmouseleave: hideTooltip,
  },
    el("div", { class: "wf-name" },
      el("span", { class: "wf-indent", style: { width: `${depth * INDENT_PX}px` } }),
      toggle,
      el("span", { class: "service-dot", style: { background: colourFor(service) } }),
      el("span", { class: "wf-service" }, service),
      el("span", { class: "wf-span-name", title: span.name || "" }, span.name || "(unnamed)"),
      el("span", { class: "wf-flags" },
        node.orphan ? el("span", { class: "flag flag-warn", title: `Parent ${span.parentId || ""} is not in this trace` }, "no parent") : null,
        error ? el("span", { class: "flag flag-error", title: `error: ${span.tags.error}` }, "error") : null,
        kind)),
    el("div", { class: "wf-timeline" }, el("div", { class: "wf-track" },
      bar,
      el("span", { class: `wf-label${timed ? labelClass : ""}`, style: timed ? labelStyle : { left: `${end}%` } },
        timed ? label : "no timestamp"))));
}

function toggleNode(key) {
  if (state.collapsed.has(key)) state.collapsed.delete(key);
  else state.collapsed.add(key);
  renderTrace();
}

function selectNode(key) {
  state.selected = state.selected === key ? null : key;
  renderTrace();
}

function renderDetail(node, summary) {
  const span = node.span;
  const service = serviceOf(span);
  const rows = [
    ["Duration", formatDuration(span.duration)],
    ["Start", span.timestamp ? `+${formatDuration(span.timestamp - summary.start)} · ${formatClock(span.timestamp)}` : "no timestamp"],
    ["Kind", span.kind || "local"],
    ["Span ID", el("span", { class: "mono" }, span.id)],
    ["Parent ID", span.parentId ? el("span", { class: node.orphan ? "mono warn-text" : "mono" },
      span.parentId, node.orphan ? " (not in trace)" : "") : "none (root)"],
    ["Local", endpointText(span.localEndpoint) || "–"],
    ["Remote", endpointText(span.remoteEndpoint) || "–"],
  ];
  if (span.shared) rows.push(["Shared", "yes (server side of a shared span id)"]);
  if (span.debug) rows.push(["Debug", "yes"]);
  const tags = Object.entries(span.tags || {}).sort(([a], [b]) => a.localeCompare(b));
  const annotations = span.annotations || [];
  const detail = $("detail");
  fill(detail,
    el("div", { class: "detail-head" },
      el("div", {},
        el("div", { class: "detail-service" }, el("span", { class: "service-dot", style: { background: colourFor(service) } }), service),
        el("h2", {}, span.name || "(unnamed)")),
      el("button", { class: "close", type: "button", title: "Close (Esc)", onclick: () => selectNode(node.key) }, "×")),
    el("dl", { class: "kv" }, rows.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)])),
    el("h3", {}, `Tags (${tags.length})`),
    tags.length ? el("table", { class: "tags" }, tags.map(([key, value]) =>
      el("tr", { class: key === "error" ? "error" : null }, el("th", {}, key), el("td", {}, value)))) : el("p", { class: "muted" }, "No tags"),
    el("h3", {}, `Annotations (${annotations.length})`),
    annotations.length ? el("ul", { class: "annotations" }, annotations.map((annotation) =>
      el("li", {}, el("span", { class: "mono muted" }, `+${formatDuration(annotation.timestamp - summary.start)}`), " ", annotation.value)))
      : el("p", { class: "muted" }, "No annotations"),
  );
  detail.hidden = false;
}

function showTooltip(event, span, offset) {
  const tooltip = $("tooltip");
  const service = serviceOf(span);
  fill(tooltip,
    el("div", { class: "tt-title" }, el("span", { class: "service-dot", style: { background: colourFor(service) } }), `${service} · ${span.name || "(unnamed)"}`),
    el("div", {}, `${formatDuration(span.duration)}${span.timestamp ? ` at +${formatDuration(offset)}` : ""}${span.kind ? ` · ${span.kind}` : ""}`),
    isError(span) ? el("div", { class: "tt-error" }, `error: ${span.tags.error}`) : null,
    span.remoteEndpoint ? el("div", { class: "muted" }, `→ ${endpointText(span.remoteEndpoint)}`) : null,
  );
  tooltip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
  const y = event.clientY + 18 + tooltip.offsetHeight > window.innerHeight ? event.clientY - tooltip.offsetHeight - 10 : event.clientY + 18;
  tooltip.style.left = `${x}px`;
  tooltip.style.top = `${y}px`;
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

// --- navigation --------------------------------------------------------------------------------------------------

function traceIdFromHash() {
  const match = /^#trace=([0-9a-fA-F]{1,32})$/.exec(location.hash);
  return match ? match[1].toLowerCase() : null;
}

function route() {
  const traceId = traceIdFromHash();
  if (traceId) {
    showTrace(traceId);
  } else {
    state.trace = null;
    $("trace-view").hidden = true;
    $("list-view").hidden = false;
    hideTooltip();
    refreshList();
  }
}

function scheduleRefresh() {
  clearInterval(state.refreshTimer);
  state.refreshTimer = $("auto-refresh").checked
    ? setInterval(() => { if (!$("list-view").hidden && !document.hidden) refreshList(); }, REFRESH_MS)
    : null;
}

function start() {
  for (const id of ["filter-service", "filter-limit", "filter-errors"]) $(id).addEventListener("change", refreshList);
  $("filter-min").addEventListener("input", refreshList);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); refreshList(); });
  $("refresh").addEventListener("click", refreshList);
  $("auto-refresh").addEventListener("change", scheduleRefresh);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !state.trace) return;
    if (state.selected) selectNode(state.selected);
    else location.hash = "";
  });
  window.addEventListener("hashchange", route);
  scheduleRefresh();
  route();
}

start();
