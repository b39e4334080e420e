"""The dashboard's single page: plain HTML, CSS and canvas JS, no external assets (works offline).

Two different "hold" numbers appear on it and are labelled apart: the controller's hold share (periods
in which the robot applied no fresh reply, counted by its watchdog and reported in its requests) and
the server's `hold` source (the server repeated the last action because the observation was not
finite). Only the first says how often the robot ran without the policy.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spaars-robot safety</title>
<style>
 body{font:14px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2733}
 header{display:flex;align-items:center;gap:16px;padding:10px 18px;background:#1d2733;color:#fff}
 header h1{font-size:17px;margin:0;font-weight:600} #conn{font-size:12px;opacity:.8}
 main{padding:14px 18px;display:grid;grid-template-columns:repeat(8,1fr);gap:12px}
 .tile{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px #0002;min-width:0}
 .tile h2{font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:#5b6775;margin:0 0 6px}
 .big{font-size:24px;font-weight:650;white-space:nowrap} .sub{font-size:12px;color:#5b6775}
 .w2{grid-column:span 2} .w3{grid-column:span 3} .w4{grid-column:span 4}
 .state-running{color:#137333} .state-hold{color:#b06000} .state-damp{color:#c5221f}
 .state-safe_stop{color:#fff;background:#c5221f;border-radius:6px;padding:0 8px}
 .state-wait_handshake{color:#5b6775} .warn{color:#b06000} .bad{color:#c5221f}
 .src-raw{color:#1a73e8} .src-latent{color:#7b1fa2} .src-fallback{color:#c5221f} .src-hold{color:#b06000}
 canvas{width:100%;height:190px;display:block} canvas#latency{height:110px}
 table{border-collapse:collapse;width:100%} td,th{padding:2px 4px;border-bottom:1px solid #eee}
 th{font-size:11px;font-weight:600;color:#5b6775;text-align:right} th:first-child{text-align:left}
 td.n{text-align:right;font-variant-numeric:tabular-nums} tr.key td{font-weight:600}
 ul{margin:0;padding-left:0;list-style:none;max-height:230px;overflow:auto} li{margin:2px 0}
 .ts{font-variant-numeric:tabular-nums;color:#5b6775;font-size:12px;margin-right:6px}
 .legend{font-size:11px;color:#5b6775}
</style></head>
<body>
<header><h1>spaars-robot &middot; live safety state</h1><span id="conn">connecting&hellip;</span>
<span id="client" class="sub" style="color:#cfd6de"></span></header>
<main>
 <div class="tile"><h2>Watchdog</h2><div class="big" id="watchdog" data-testid="watchdog">&ndash;</div>
  <div class="sub">as the controller reports it</div></div>
 <div class="tile"><h2>Controller hold</h2><div class="big" id="controller-hold" data-testid="controller-hold">&ndash;</div>
  <div class="sub" id="controller-hold-total" data-testid="controller-hold-total">not reported</div></div>
 <div class="tile"><h2>Deadline misses</h2><div class="big" id="deadline-misses" data-testid="deadline-misses">&ndash;</div>
  <div class="sub" id="deadline-rate" data-testid="deadline-rate">not reported</div></div>
 <div class="tile"><h2>Action source</h2><div class="big" id="source" data-testid="source">&ndash;</div>
  <div class="sub">seq <span id="seq">&ndash;</span></div></div>
 <div class="tile"><h2>Fallback rate</h2><div class="big" id="fallback-rate" data-testid="fallback-rate">&ndash;</div>
  <div class="sub"><span id="fallbacks" data-testid="fallbacks">0</span> fallbacks total</div></div>
 <div class="tile"><h2>Gate: raw share</h2><div class="big" id="raw-rate">&ndash;</div>
  <div class="sub">latent <span id="latent-rate">&ndash;</span> &middot; server hold <span id="hold-rate">&ndash;</span></div></div>
 <div class="tile"><h2>Gate advantage</h2><div class="big" id="gate">&ndash;</div>
  <div class="sub" id="ood"></div></div>
 <div class="tile"><h2>Requests</h2><div class="big" id="records" data-testid="records">0</div>
  <div class="sub">latency <span id="lat-last">&ndash;</span> &micro;s total</div></div>
 <div class="tile w4"><h2>Action vs limits</h2><canvas id="action" data-testid="action"></canvas>
  <div class="legend">bar = commanded action &middot; grey = hard bounds &middot; amber band = soft zone (push-back)
   &middot; bar amber in the soft zone, red at a bound</div></div>
 <div class="tile w4"><h2>Support score vs threshold</h2><canvas id="support"></canvas>
  <div class="legend">dots = support score per request (red above threshold) &middot; dashed = threshold</div></div>
 <div class="tile w3"><h2>Latency per stage (<span style="text-transform:none">&micro;s</span>, last 500 requests)</h2>
  <table id="latency-stages" data-testid="latency-stages"></table><canvas id="latency"></canvas>
  <div class="legend">histogram: total, 10 &micro;s .. 100 ms</div></div>
 <div class="tile w2"><h2>Limit hits</h2><table id="limits" data-testid="limits"></table>
  <div class="legend" id="limits-window"></div></div>
 <div class="tile w3"><h2>Events</h2><ul id="events" data-testid="events"><li class="sub">none yet</li></ul></div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (t) => String(t).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
const pct = (x) => (100 * x).toFixed(1) + " %";
const STAGES = {decode: "decode", policy: "policy (infer)", decide: "decide (gate)", safety: "safety",
                encode: "encode", total: "total"};
const KEY_STAGES = new Set(["policy", "safety", "total"]);
function clock(t) {  // the server's Unix time as local wall-clock time with milliseconds
  const d = new Date(t * 1000), p = (n, w) => String(n).padStart(w || 2, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
}
function canvas2d(id) {
  const c = $(id), r = window.devicePixelRatio || 1;
  c.width = c.clientWidth * r; c.height = c.clientHeight * r;
  const g = c.getContext("2d"); g.scale(r, r); g.font = "11px system-ui";
  return [g, c.clientWidth, c.clientHeight];
}
function drawAction(last) {
  const [g, w, h] = canvas2d("action"); const n = last.action.length;
  const finite = (v) => v !== null && Number.isFinite(v);
  const lows = last.action_low.filter(finite), highs = last.action_high.filter(finite);
  let lo = lows.length ? Math.min(...lows) : -1, hi = highs.length ? Math.max(...highs) : 1;
  const pad = 0.15 * (hi - lo); lo -= pad; hi += pad;
  const y = (v) => h - 18 - (Math.min(Math.max(v, lo), hi) - lo) / (hi - lo) * (h - 28), bw = w / n;
  const softLow = last.action_soft_low || [], softHigh = last.action_soft_high || [];
  for (let i = 0; i < n; i++) {
    const x0 = i * bw + bw * 0.2, x1 = bw * 0.6, a = last.action[i];
    const bl = finite(last.action_low[i]) ? last.action_low[i] : lo, bh = finite(last.action_high[i]) ? last.action_high[i] : hi;
    g.fillStyle = "#e3e6ea"; g.fillRect(x0, y(bh), x1, y(bl) - y(bh));
    const sl = softLow[i], sh = softHigh[i];
    g.fillStyle = "#f9c77e";  // the soft zone: between the soft edge and the hard bound
    if (finite(sh) && sh < bh) g.fillRect(x0, y(bh), x1, y(sh) - y(bh));
    if (finite(sl) && sl > bl) g.fillRect(x0, y(sl), x1, y(bl) - y(sl));
    const atBound = a !== null && (a >= bh - 1e-9 || a <= bl + 1e-9);
    const inSoft = a !== null && ((finite(sh) && a > sh + 1e-9) || (finite(sl) && a < sl - 1e-9));
    g.fillStyle = a === null || atBound ? "#c5221f" : inSoft ? "#b06000" : "#1a73e8";
    const v = a === null ? 0 : a; g.fillRect(x0 + x1 * 0.3, Math.min(y(0), y(v)), x1 * 0.4, Math.abs(y(v) - y(0)) || 1);
    g.fillStyle = "#1d2733"; g.textAlign = "center";
    g.fillText("a" + i + " = " + (a === null ? "NaN" : v.toFixed(2)), x0 + x1 / 2, h - 4); g.textAlign = "left";
  }
  g.strokeStyle = "#5b6775"; g.beginPath(); g.moveTo(0, y(0)); g.lineTo(w, y(0)); g.stroke();
}
function drawSupport(series, threshold) {
  const [g, w, h] = canvas2d("support"); const vals = series.map((p) => p[1]).filter((v) => v !== null);
  if (!vals.length) return;
  let lo = Math.min(...vals, threshold ?? Infinity), hi = Math.max(...vals, threshold ?? -Infinity);
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; } const pad = 0.1 * (hi - lo); lo -= pad; hi += pad;
  const y = (v) => h - 8 - (v - lo) / (hi - lo) * (h - 16), x = (i) => 30 + i / Math.max(series.length - 1, 1) * (w - 36);
  g.fillStyle = "#5b6775"; g.fillText(hi.toPrecision(3), 0, 12); g.fillText(lo.toPrecision(3), 0, h - 4);
  if (threshold !== null) {
    g.strokeStyle = "#c5221f"; g.setLineDash([6, 4]); g.beginPath(); g.moveTo(30, y(threshold)); g.lineTo(w, y(threshold)); g.stroke();
    g.setLineDash([]); g.fillStyle = "#c5221f"; g.fillText("threshold " + threshold.toPrecision(3), w - 110, y(threshold) - 4);
  }
  series.forEach((p, i) => { if (p[1] === null) return;
    g.fillStyle = threshold !== null && p[1] > threshold ? "#c5221f" : "#1a73e8"; g.fillRect(x(i) - 1.5, y(p[1]) - 1.5, 3, 3); });
}
function drawLatency(edges, hist) {
  const [g, w, h] = canvas2d("latency"); const m = Math.max(...hist, 1), bw = (w - 10) / hist.length;
  hist.forEach((c, i) => { const bh = c / m * (h - 30); g.fillStyle = "#1a73e8"; g.fillRect(5 + i * bw + 1, h - 18 - bh, bw - 2, bh); });
  g.fillStyle = "#5b6775";
  [0, 4, 8, 12, 16].forEach((i) => { const e = edges[i], t = e >= 1000 ? (e / 1000) + " ms" : e.toFixed(0) + " us";
    g.fillText(t, Math.min(5 + i * bw, w - 40), h - 4); });
}
function renderController(c, recentS) {
  if (!c) return;
  $("deadline-misses").textContent = c.deadline_misses;
  $("deadline-misses").className = "big" + (c.recent_deadline_misses > 0 ? " bad" : "");
  $("deadline-rate").textContent = c.deadline_miss_rate.toFixed(1) + " /s over the last " + recentS + " s";
  if (c.ticks === null) { $("controller-hold").textContent = "n/a";
    $("controller-hold-total").textContent = "controller reports no tick counts"; return; }
  const hold = $("controller-hold");
  hold.textContent = c.recent_hold_share === null ? "-" : pct(c.recent_hold_share);
  hold.className = "big" + (c.recent_held > 0 ? " warn" : "");
  $("controller-hold-total").textContent = "ticks without a fresh reply, last " + recentS + " s; since start: "
    + c.held + " of " + c.ticks + " ticks (" + (c.hold_share === null ? "-" : pct(c.hold_share)) + ")";
}
function render(s) {
  $("records").textContent = s.records; const last = s.last; if (!last) return;
  const wd = $("watchdog"); wd.textContent = last.watchdog.toUpperCase().replace("_", " "); wd.className = "big state-" + last.watchdog;
  const src = $("source"); src.textContent = last.source; src.className = "big src-" + last.source;
  $("seq").textContent = last.sequence; $("client").textContent = last.client ? "client " + last.client : "";
  $("fallback-rate").textContent = pct(s.share.fallback); $("fallbacks").textContent = s.by_source.fallback || 0;
  $("raw-rate").textContent = pct(s.share.raw); $("latent-rate").textContent = pct(s.share.latent);
  $("hold-rate").textContent = pct(s.share.hold);
  $("gate").textContent = last.gate_advantage === null ? "NaN" : last.gate_advantage.toFixed(3);
  $("ood").textContent = last.observation_ood ? "observation out of bounds" : "";
  $("lat-last").textContent = last.latency_us.total != null ? last.latency_us.total.toFixed(0) : "-";
  renderController(s.controller, s.recent_s);
  const stages = Object.entries(s.latency_stages);
  $("latency-stages").innerHTML = stages.length ? "<tr><th>stage</th><th>p50</th><th>p99</th></tr>" + stages.map(([k, v]) =>
    `<tr class="${KEY_STAGES.has(k) ? "key" : ""}" data-stage="${esc(k)}"><td>${esc(STAGES[k] || k)}</td>` +
    `<td class="n">${v.p50.toFixed(0)}</td><td class="n">${v.p99.toFixed(0)}</td></tr>`).join("")
    : '<tr><td class="sub">no latency reported</td></tr>';
  const kinds = Object.keys(s.limit_hits).sort((a, b) =>
    ((s.limit_rates[b] || {}).per_s || 0) - ((s.limit_rates[a] || {}).per_s || 0) || s.limit_hits[b] - s.limit_hits[a]);
  $("limits").innerHTML = kinds.length ? "<tr><th>kind</th><th>/s</th><th>% req</th><th>total</th></tr>" + kinds.map((k) => {
    const r = s.limit_rates[k] || {per_s: 0, share: 0};
    return `<tr data-kind="${esc(k)}"><td>${esc(k)}</td><td class="n">${r.per_s.toFixed(1)}</td>` +
      `<td class="n">${(100 * r.share).toFixed(1)}</td><td class="n">${s.limit_hits[k]}</td></tr>`; }).join("")
    : '<tr><td class="sub">no limit has acted</td></tr>';
  $("limits-window").textContent = "/s and % of requests over the last " + s.recent_span_s.toFixed(1) + " s (server clock)";
  $("events").innerHTML = s.events.length ? s.events.map((e) => `<li><span class="ts">${clock(e.last_time)}</span> ` +
    `<b>#${e.last_sequence}</b> ${esc(e.text)}</li>`).join("") : '<li class="sub">none yet</li>';
  drawAction(last); drawSupport(s.support_series, last.support_threshold); drawLatency(s.latency_edges_us, s.latency_hist);
}
const source = new EventSource("/events");
source.onopen = () => { $("conn").textContent = "live"; };
source.onerror = () => { $("conn").textContent = "disconnected, retrying"; };
source.onmessage = (ev) => render(JSON.parse(ev.data));
</script></body></html>
"""
