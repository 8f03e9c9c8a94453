// The on-call console: the alerter's active alerts by severity, their runbooks and history,
// and acknowledgement and comments for the signed-in duty officer. Plain JavaScript, no build
// step; every text from an alert is set with textContent (labels come from city payloads).
"use strict";

const TEXT = {
  vi: {
    title: "Trực cảnh báo", english: "English", signin: "Đăng nhập", signout: "Đăng xuất",
    token: "Mã truy cập", badToken: "Mã truy cập không đúng", signedIn: "Đăng nhập: ",
    allSeverities: "Mọi mức độ", allStates: "Mọi trạng thái", allDistricts: "Mọi quận/huyện",
    search: "Tìm", unacked: "Chưa xác nhận",
    critical: "Nghiêm trọng", warning: "Cảnh báo", info: "Thông tin",
    firing: "Đang báo", pending: "Chờ xác định", level: "Cấp ",
    since: "từ ", district: "Quận/huyện", ward: "Phường/xã",
    acked: "Đã xác nhận: ", notAcked: "Chưa ai xác nhận",
    runbook: "Hướng dẫn xử lý", details: "Chi tiết", hide: "Thu gọn",
    ack: "Xác nhận", unack: "Bỏ xác nhận", comment: "Ghi chú", commentPlaceholder: "Ghi chú (không bắt buộc khi xác nhận)",
    history: "Lịch sử", loading: "Đang tải…", noHistory: "Chưa có trong lịch sử",
    none: "Không có cảnh báo nào đang hoạt động.", noneFiltered: "Không có cảnh báo nào khớp bộ lọc.",
    updated: "Cập nhật lúc ", offline: "Không kết nối được bộ cảnh báo — đang thử lại",
    signInToAct: "Đăng nhập để xác nhận hoặc ghi chú.", failed: "Không thực hiện được: ",
    states: { firing: "đang báo", pending: "chờ", resolved: "đã hết", inactive: "đã hủy",
      acknowledged: "đã xác nhận", unacknowledged: "bỏ xác nhận", commented: "ghi chú", escalated: "chuyển cấp" },
    labels: "Nhãn", value: "Giá trị",
  },
  en: {
    title: "On-call console", english: "Tiếng Việt", signin: "Sign in", signout: "Sign out",
    token: "Access token", badToken: "That token is not valid", signedIn: "Signed in: ",
    allSeverities: "All severities", allStates: "All states", allDistricts: "All districts",
    search: "Search", unacked: "Not acknowledged",
    critical: "Critical", warning: "Warning", info: "Info",
    firing: "Firing", pending: "Pending", level: "Level ",
    since: "since ", district: "District", ward: "Ward",
    acked: "Acknowledged: ", notAcked: "Nobody has acknowledged it",
    runbook: "Runbook", details: "Details", hide: "Hide",
    ack: "Acknowledge", unack: "Unacknowledge", comment: "Comment", commentPlaceholder: "Comment (optional when acknowledging)",
    history: "History", loading: "Loading…", noHistory: "Nothing in the history yet",
    none: "No active alerts.", noneFiltered: "No alerts match the filters.",
    updated: "Updated at ", offline: "Cannot reach the alerter — retrying",
    signInToAct: "Sign in to acknowledge or comment.", failed: "Could not do it: ",
    states: { firing: "firing", pending: "pending", resolved: "resolved", inactive: "cancelled",
      acknowledged: "acknowledged", unacknowledged: "unacknowledged", commented: "comment", escalated: "escalated" },
    labels: "Labels", value: "Value",
  },
};

const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };
const REFRESH_MS = 5000;

const state = {
  lang: localStorage.getItem("cityops.lang") === "en" ? "en" : "vi",
  token: sessionStorage.getItem("cityops.token") || "",
  me: "",
  alerts: [],
  open: new Set(),
  histories: new Map(),
  drafts: new Map(),
  reachable: true,
  updated: null,
};

const $ = (id) => document.getElementById(id);
const t = (key) => TEXT[state.lang][key];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Intl.DateTimeFormat(state.lang === "vi" ? "vi-VN" : "en-GB", {
    timeZone: "Asia/Ho_Chi_Minh", day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).format(d);
}

async function api(path, options) {
  const headers = Object.assign({}, (options && options.headers) || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || response.status + " " + response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function refresh() {
  try {
    const body = await api("/api/v1/alerts");
    state.alerts = body.data.alerts;
    state.reachable = true;
    state.updated = new Date();
  } catch (_) {
    state.reachable = false;
  }
  // Someone typing a comment keeps their box (and its focus); the list catches up after.
  if (document.activeElement && document.activeElement.classList.contains("comment-input")) return;
  render();
  for (const fp of state.open) loadHistory(fp);
}

async function loadHistory(fp) {
  try {
    const body = await api("/api/v1/alerts/" + encodeURIComponent(fp) + "/history");
    state.histories.set(fp, body.data.events);
  } catch (e) {
    state.histories.set(fp, { error: e.message });
  }
  const box = document.querySelector('.alert[data-fingerprint="' + fp + '"] .history-box');
  if (box) box.replaceChildren(historyTable(fp));
}

async function act(fp, verb, comment) {
  const status = document.querySelector('.alert[data-fingerprint="' + fp + '"] .action-status');
  try {
    await api("/api/v1/alerts/" + encodeURIComponent(fp) + "/" + verb, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(comment ? { comment } : {}),
    });
    state.drafts.delete(fp);
    await refresh();
  } catch (e) {
    if (status) status.textContent = t("failed") + e.message;
  }
}

function historyTable(fp) {
  const events = state.histories.get(fp);
  if (events === undefined) return el("p", { class: "meta", text: t("loading") });
  if (events.error) return el("p", { class: "error", text: t("failed") + events.error });
  if (events.length === 0) return el("p", { class: "meta", text: t("noHistory") });
  const table = el("table", { class: "history" });
  for (const e of events) {
    let what = t("states")[e.state] || e.state;
    if (e.state === "escalated") what += " " + t("level") + e.escalation;
    else if (e.actor) what += " — " + e.actor;
    if (e.comment) what += ": " + e.comment;
    table.append(el("tr", { class: "history-row", "data-state": e.state },
      el("td", { text: localTime(e.at) }), el("td", { text: what })));
  }
  return table;
}

function safeUrl(url) {
  return typeof url === "string" && /^https?:\/\//.test(url) ? url : null;
}

function card(a) {
  const acked = a.acknowledged;
  const node = el("article", {
    class: "alert sev-" + a.severity + (acked ? " acked" : ""),
    "data-fingerprint": a.fingerprint, "data-alertname": a.alertname,
  });
  const head = el("div", { class: "head" },
    el("span", { class: "badge " + a.severity, text: t(a.severity) || a.severity }),
    el("span", { class: "name", text: a.alertname }),
    el("span", { class: "badge state", text: t(a.state) || a.state }));
  if (a.escalation > 0) head.append(el("span", { class: "badge escalation", text: t("level") + a.escalation }));
  node.append(head);
  const ann = a.annotations || {};
  if (ann.summary) node.append(el("p", { class: "summary", text: ann.summary }));
  const place = [a.labels.district, a.labels.ward].filter(Boolean).join(" · ");
  node.append(el("div", { class: "meta", text: [place, t("since") + localTime(a.firedAt || a.activeAt)].filter(Boolean).join(" — ") }));
  node.append(el("div", {
    class: "ack-state" + (acked ? " on" : ""),
    text: acked ? t("acked") + acked.by + " (" + localTime(acked.at) + ")" + (acked.comment ? ": " + acked.comment : "") : t("notAcked"),
  }));
  const runbookUrl = safeUrl(ann.runbook_url);
  if (ann.runbook || runbookUrl) {
    const p = el("p", { class: "runbook" });
    if (ann.runbook) p.append(document.createTextNode(ann.runbook + " "));
    if (runbookUrl) p.append(el("a", { href: runbookUrl, target: "_blank", rel: "noopener noreferrer", class: "runbook-link", text: t("runbook") }));
    node.append(p);
  }
  const open = state.open.has(a.fingerprint);
  const toggle = el("button", { type: "button", class: "details-button", text: open ? t("hide") : t("details") });
  toggle.addEventListener("click", () => {
    if (state.open.has(a.fingerprint)) state.open.delete(a.fingerprint);
    else { state.open.add(a.fingerprint); loadHistory(a.fingerprint); }
    render();
  });
  node.append(el("div", { class: "row" }, toggle));
  if (open) node.append(details(a));
  return node;
}

function details(a) {
  const box = el("div", { class: "details" });
  if (a.annotations && a.annotations.description) box.append(el("p", { text: a.annotations.description }));
  const dl = el("dl");
  for (const [k, v] of Object.entries(a.labels)) dl.append(el("dt", { text: k }), el("dd", { text: v }));
  if (a.value !== null && a.value !== undefined) dl.append(el("dt", { text: t("value") }), el("dd", { text: String(a.value) }));
  box.append(dl);
  if (state.me) {
    const comment = el("textarea", { class: "comment-input", placeholder: t("commentPlaceholder"), "aria-label": t("comment") });
    comment.value = state.drafts.get(a.fingerprint) || "";
    comment.addEventListener("input", () => state.drafts.set(a.fingerprint, comment.value));
    const row = el("div", { class: "row" });
    const button = (cls, label, verb, primary) => {
      const b = el("button", { type: "button", class: cls + (primary ? " primary" : ""), text: label });
      b.addEventListener("click", () => act(a.fingerprint, verb, comment.value.trim()));
      return b;
    };
    if (a.acknowledged) row.append(button("unack-button", t("unack"), "unack", false));
    else row.append(button("ack-button", t("ack"), "ack", true));
    row.append(button("comment-button", t("comment"), "comment", false));
    box.append(comment, row, el("p", { class: "error action-status", role: "alert" }));
  } else {
    box.append(el("p", { class: "meta", text: t("signInToAct") }));
  }
  box.append(el("h3", { text: t("history") }), el("div", { class: "history-box" }, historyTable(a.fingerprint)));
  return box;
}

function fillSelect(select, options, current) {
  select.replaceChildren(...options.map(([value, label]) => {
    const o = el("option", { value, text: label });
    if (value === current) o.selected = true;
    return o;
  }));
}

function render() {
  document.documentElement.lang = state.lang;
  document.title = t("title") + " — cityops";
  $("title").textContent = t("title");
  $("lang-button").textContent = t("english");
  $("signin-button").textContent = t("signin");
  $("signin-submit").textContent = t("signin");
  $("signout-button").textContent = t("signout");
  $("token-label").textContent = t("token");
  $("filter-text").placeholder = t("search");
  $("filter-unacked-label").textContent = t("unacked");
  $("signin-button").hidden = Boolean(state.me);
  $("signout-button").hidden = !state.me;
  $("whoami").hidden = !state.me;
  $("whoami").textContent = state.me ? t("signedIn") + state.me : "";

  const sev = $("filter-severity").value, st = $("filter-state").value, dist = $("filter-district").value;
  fillSelect($("filter-severity"), [["", t("allSeverities")], ["critical", t("critical")], ["warning", t("warning")], ["info", t("info")]], sev);
  fillSelect($("filter-state"), [["", t("allStates")], ["firing", t("firing")], ["pending", t("pending")]], st);
  const districts = [...new Set(state.alerts.map((a) => a.labels.district).filter(Boolean))].sort();
  fillSelect($("filter-district"), [["", t("allDistricts")], ...districts.map((d) => [d, d])], dist);

  const text = $("filter-text").value.trim().toLowerCase();
  const unacked = $("filter-unacked").checked;
  const shown = state.alerts
    .filter((a) => !sev || a.severity === sev)
    .filter((a) => !st || a.state === st)
    .filter((a) => !dist || a.labels.district === dist)
    .filter((a) => !unacked || !a.acknowledged)
    .filter((a) => !text || JSON.stringify([a.alertname, a.labels, a.annotations.summary || ""]).toLowerCase().includes(text))
    .sort((x, y) => (SEVERITY_ORDER[x.severity] - SEVERITY_ORDER[y.severity])
      || (x.state === y.state ? 0 : x.state === "firing" ? -1 : 1)
      || String(x.activeAt).localeCompare(String(y.activeAt)));

  const counts = ["critical", "warning", "info"]
    .map((s) => [s, state.alerts.filter((a) => a.severity === s && a.state === "firing").length])
    .filter(([, n]) => n > 0).map(([s, n]) => n + " " + t(s).toLowerCase());
  $("counts").textContent = counts.join(" · ");

  const status = $("status");
  status.className = "status" + (state.reachable ? "" : " bad");
  status.textContent = state.reachable ? (state.updated ? t("updated") + localTime(state.updated.toISOString()) : "") : t("offline");

  const list = $("alerts");
  list.replaceChildren(...(shown.length ? shown.map(card)
    : [el("p", { class: "empty", text: state.alerts.length ? t("noneFiltered") : t("none") })]));
}

async function signIn(token) {
  const previous = state.token;
  state.token = token;
  try {
    const body = await api("/api/v1/whoami");
    state.me = body.data.name;
    sessionStorage.setItem("cityops.token", token);
    $("signin-form").hidden = true;
    $("signin-error").textContent = "";
    return true;
  } catch (_) {
    state.token = previous;
    state.me = "";
    return false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("lang-button").addEventListener("click", () => {
    state.lang = state.lang === "vi" ? "en" : "vi";
    localStorage.setItem("cityops.lang", state.lang);
    render();
  });
  $("signin-button").addEventListener("click", () => {
    $("signin-form").hidden = false;
    $("token-input").focus();
  });
  $("signout-button").addEventListener("click", () => {
    state.token = "";
    state.me = "";
    sessionStorage.removeItem("cityops.token");
    render();
  });
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const ok = await signIn($("token-input").value.trim());
    $("token-input").value = "";
    if (!ok) $("signin-error").textContent = t("badToken");
    render();
  });
  for (const id of ["filter-severity", "filter-state", "filter-district", "filter-unacked"]) $(id).addEventListener("change", render);
  $("filter-text").addEventListener("input", render);
  (async () => {
    if (state.token && !(await signIn(state.token))) sessionStorage.removeItem("cityops.token");
    await refresh();
    setInterval(refresh, REFRESH_MS);
  })();
});
