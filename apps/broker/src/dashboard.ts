/**
 * The live dashboard: one self-contained HTML page (no external scripts,
 * fonts or CDNs) that polls `/api/dashboard` every second and draws inline
 * SVG charts. Pure function of the service name; safe to cache per process.
 */
export function renderDashboardHtml(serviceName: string): string {
  const title = serviceName.replace(/[<>&"]/g, '');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${title} · QE Event Bus broker</title>
<style>
  :root { --bg:#f4f6f9; --card:#fff; --ink:#1b2430; --mute:#667085; --line:#e3e8ef;
          --blue:#2563eb; --green:#16a34a; --amber:#d97706; --red:#dc2626; --violet:#7c3aed; --teal:#0d9488; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; background:var(--bg); color:var(--ink); }
  header { display:flex; align-items:center; gap:16px; padding:14px 24px; background:#111827; color:#fff; }
  header h1 { font-size:18px; margin:0; font-weight:600; }
  header .meta { color:#9ca3af; font-size:13px; }
  header .spacer { flex:1; }
  .pill { padding:3px 10px; border-radius:999px; font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.04em; background:#374151; }
  .pill.healthy { background:var(--green); } .pill.degraded { background:var(--amber); } .pill.unhealthy,.pill.offline { background:var(--red); }
  main { padding:18px 24px 32px; display:grid; gap:16px; grid-template-columns:repeat(12,1fr); }
  .card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; min-width:0; }
  .card h2 { font-size:13px; margin:0 0 10px; color:var(--mute); font-weight:600; text-transform:uppercase; letter-spacing:.05em; }
  .tiles { grid-column:1/-1; display:grid; gap:12px; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); }
  .tile { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
  .tile .label { color:var(--mute); font-size:12px; }
  .tile .value { font-size:26px; font-weight:650; font-variant-numeric:tabular-nums; margin-top:2px; }
  .tile .sub { color:var(--mute); font-size:12px; font-variant-numeric:tabular-nums; }
  .w6 { grid-column:span 6; } .w4 { grid-column:span 4; } .w8 { grid-column:span 8; } .w12 { grid-column:1/-1; }
  @media (max-width:1000px) { .w6,.w4,.w8 { grid-column:1/-1; } }
  svg.chart { width:100%; height:220px; display:block; }
  svg.chart text { font-size:11px; fill:var(--mute); }
  .legend { display:flex; gap:14px; flex-wrap:wrap; font-size:12px; color:var(--mute); margin-top:6px; }
  .legend i { display:inline-block; width:12px; height:3px; border-radius:2px; vertical-align:middle; margin-right:5px; }
  .bars .row { display:grid; grid-template-columns:110px 1fr 80px; gap:8px; align-items:center; margin:5px 0; }
  .bars .name { overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
  .bars .track { background:#eef2f7; border-radius:4px; height:14px; overflow:hidden; }
  .bars .fill { height:100%; border-radius:4px; background:var(--blue); transition:width .4s; }
  .bars .num { text-align:right; font-variant-numeric:tabular-nums; }
  table { width:100%; border-collapse:collapse; font-size:13px; }
  th, td { text-align:left; padding:5px 6px; border-bottom:1px solid var(--line); }
  th { color:var(--mute); font-weight:600; font-size:12px; }
  td.n { text-align:right; font-variant-numeric:tabular-nums; }
  .empty { color:var(--mute); font-style:italic; padding:6px 0; }
  .state { font-weight:600; } .state.closed { color:var(--green); } .state.open { color:var(--red); } .state.half_open { color:var(--amber); }
  footer { grid-column:1/-1; color:var(--mute); font-size:12px; }
  a { color:var(--blue); }
</style>
</head>
<body>
<header>
  <h1>${title}</h1>
  <span class="meta" id="meta">connecting…</span>
  <span class="spacer"></span>
  <span class="meta" id="updated"></span>
  <span class="pill" id="status">…</span>
</header>
<main>
  <div class="card w12" id="banner" style="display:none;border-color:#d97706">Monitoring is off (<code>MONITORING_ENABLED=false</code>): the broker does not subscribe to events, so handled rates, latencies and per-family counts stay at zero. Published counts, lag, dead letters and health still update.</div>
  <section class="tiles">
    <div class="tile"><div class="label">Events handled / s</div><div class="value" id="t-rate">–</div><div class="sub" id="t-rate-sub"></div></div>
    <div class="tile"><div class="label">Published / s</div><div class="value" id="t-pub">–</div><div class="sub" id="t-pub-sub"></div></div>
    <div class="tile"><div class="label">Latency p99</div><div class="value" id="t-p99">–</div><div class="sub" id="t-p99-sub"></div></div>
    <div class="tile"><div class="label">Consumer lag</div><div class="value" id="t-lag">–</div><div class="sub" id="t-lag-sub"></div></div>
    <div class="tile"><div class="label">Dead letters</div><div class="value" id="t-dead">–</div><div class="sub" id="t-dead-sub"></div></div>
    <div class="tile"><div class="label">Connections</div><div class="value" id="t-conn">–</div><div class="sub" id="t-conn-sub"></div></div>
    <div class="tile"><div class="label">Memory (RSS)</div><div class="value" id="t-rss">–</div><div class="sub" id="t-rss-sub"></div></div>
  </section>
  <section class="card w6"><h2>Event rate (events / s)</h2><svg class="chart" id="c-rate" viewBox="0 0 640 220" preserveAspectRatio="none"></svg><div class="legend" id="l-rate"></div></section>
  <section class="card w6"><h2>Publish-to-handler latency (ms)</h2><svg class="chart" id="c-lat" viewBox="0 0 640 220" preserveAspectRatio="none"></svg><div class="legend" id="l-lat"></div></section>
  <section class="card w4"><h2>Events by family</h2><div class="bars" id="b-family"></div></section>
  <section class="card w4"><h2>Events by priority</h2><div class="bars" id="b-priority"></div></section>
  <section class="card w4"><h2>Connections</h2><div id="connections"></div><h2 style="margin-top:14px">Circuit breakers</h2><div id="circuits"></div></section>
  <section class="card w6"><h2>Consumer lag</h2><div id="lag"></div></section>
  <section class="card w6"><h2>Dead letters</h2><div id="dead"></div></section>
  <section class="card w6"><h2>Agents</h2><div class="bars" id="b-agents"></div><div id="pools"></div></section>
  <section class="card w6"><h2>Tasks</h2><div class="bars" id="b-tasks"></div></section>
  <section class="card w12" id="contracts-card" style="display:none"><h2>Contracts and cross-project messages</h2><div id="contracts"></div><div class="bars" id="b-xp"></div></section>
  <section class="card w12"><h2>Sagas</h2><div class="bars" id="b-sagas"></div><div id="sagas"></div></section>
  <footer>Polling <code>/api/dashboard</code> every second · <a href="/metrics">/metrics</a> · <a href="/health">/health</a> · <a href="/dead-letters">/dead-letters</a></footer>
</main>
<script>
(function () {
  'use strict';
  var PRI_COLORS = { critical: '#dc2626', high: '#d97706', normal: '#2563eb', low: '#0d9488', bulk: '#7c3aed' };
  function $(id) { return document.getElementById(id); }
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }
  function num(n) { return Math.round(n).toLocaleString('en-US'); }
  function rate(n) { return n >= 10000 ? (n / 1000).toFixed(1) + 'k' : n >= 100 ? num(n) : n.toFixed(1); }
  function ms(n) { if (!n) return '0 ms'; return n < 1 ? n.toFixed(2) + ' ms' : n < 100 ? n.toFixed(1) + ' ms' : num(n) + ' ms'; }
  function bytes(n) { return n >= 1073741824 ? (n / 1073741824).toFixed(2) + ' GB' : (n / 1048576).toFixed(0) + ' MB'; }
  function ago(t) { var s = Math.max(0, Math.round((Date.now() - t) / 1000)); return s < 60 ? s + ' s ago' : Math.round(s / 60) + ' min ago'; }
  function niceMax(v) { if (v <= 0) return 1; var p = Math.pow(10, Math.floor(Math.log10(v))); var m = v / p; return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p; }

  function chart(svg, legend, series, history, unit) {
    var W = 640, H = 220, L = 52, R = 8, T = 10, B = 24;
    var n = history.length;
    var max = 0;
    series.forEach(function (s) { history.forEach(function (h) { var v = h[s.key]; if (v > max) max = v; }); });
    max = niceMax(max * 1.05);
    var out = [];
    for (var i = 0; i <= 4; i++) {
      var y = T + (H - T - B) * (1 - i / 4);
      out.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y + '" y2="' + y + '" stroke="#e3e8ef"/>');
      var v = max * i / 4;
      out.push('<text x="' + (L - 6) + '" y="' + (y + 4) + '" text-anchor="end">' + (unit === 'ms' ? (v < 10 ? v.toFixed(v < 1 ? 2 : 1) : num(v)) : rate(v)) + '</text>');
    }
    if (n > 0) {
      var span = Math.max(1, history[n - 1].t - history[0].t);
      var xs = function (t) { return L + (W - L - R) * (n === 1 ? 1 : (t - history[0].t) / span); };
      out.push('<text x="' + L + '" y="' + (H - 6) + '">' + Math.round(span / 1000) + ' s ago</text>');
      out.push('<text x="' + (W - R) + '" y="' + (H - 6) + '" text-anchor="end">now</text>');
      series.forEach(function (s) {
        var d = history.map(function (h, i) {
          var y = T + (H - T - B) * (1 - Math.min(1, h[s.key] / max));
          return (i === 0 ? 'M' : 'L') + xs(h.t).toFixed(1) + ',' + y.toFixed(1);
        }).join('');
        out.push('<path d="' + d + '" fill="none" stroke="' + s.color + '" stroke-width="' + (s.width || 2) + '" stroke-linejoin="round"' + (s.dash ? ' stroke-dasharray="4 3"' : '') + '/>');
      });
    } else {
      out.push('<text x="' + (W / 2) + '" y="' + (H / 2) + '" text-anchor="middle">waiting for the first sample…</text>');
    }
    svg.innerHTML = out.join('');
    var last = history[n - 1];
    legend.innerHTML = series.map(function (s) {
      return '<span><i style="background:' + s.color + '"></i>' + esc(s.name) + (last ? ': <b>' + (unit === 'ms' ? ms(last[s.key]) : rate(last[s.key]) + '/s') + '</b>' : '') + '</span>';
    }).join('');
  }

  function bars(el, entries, colorOf) {
    var total = entries.reduce(function (a, e) { return a + e[1]; }, 0);
    var max = entries.reduce(function (a, e) { return Math.max(a, e[1]); }, 0) || 1;
    if (entries.length === 0) { el.innerHTML = '<div class="empty">no events yet</div>'; return; }
    el.innerHTML = entries.map(function (e) {
      var pct = total ? (100 * e[1] / total).toFixed(1) : '0.0';
      return '<div class="row" data-name="' + esc(e[0]) + '"><span class="name">' + esc(e[0]) + '</span><span class="track"><span class="fill" style="display:block;width:' + (100 * e[1] / max).toFixed(1) + '%;background:' + (colorOf ? colorOf(e[0]) : '') + '"></span></span><span class="num" title="' + pct + '%">' + num(e[1]) + '</span></div>';
    }).join('');
  }

  function table(el, head, rows, empty) {
    if (rows.length === 0) { el.innerHTML = '<div class="empty">' + esc(empty) + '</div>'; return; }
    el.innerHTML = '<table><thead><tr>' + head.map(function (h) { return '<th' + (h.n ? ' class="n"' : '') + '>' + esc(h.t) + '</th>'; }).join('') + '</tr></thead><tbody>' +
      rows.map(function (r) { return '<tr>' + r.map(function (c, i) { return '<td' + (head[i].n ? ' class="n"' : '') + '>' + c + '</td>'; }).join('') + '</tr>'; }).join('') + '</tbody></table>';
  }

  function render(d) {
    var h = d.history, last = d.latest || { handledPerSec: 0, publishedPerSec: 0, p50: 0, p99: 0, p999: 0, max: 0, count: 0, rssBytes: 0 };
    var status = d.health ? d.health.status : 'unknown';
    $('status').textContent = status; $('status').className = 'pill ' + status;
    $('status').title = d.health && d.health.reasons.length ? d.health.reasons.join('; ') : '';
    $('banner').style.display = d.monitoring ? 'none' : 'block';
    $('meta').textContent = 'node ' + d.nodeId + ' · transport ' + d.transport + ' · up ' + Math.round((d.now - d.startedAt) / 1000) + ' s';
    $('updated').textContent = 'updated ' + new Date(d.now).toLocaleTimeString();
    $('t-rate').textContent = rate(last.handledPerSec); $('t-rate-sub').textContent = num(d.totals.handled) + ' handled in total';
    $('t-pub').textContent = rate(last.publishedPerSec); $('t-pub-sub').textContent = num(d.totals.published) + ' published here';
    $('t-p99').textContent = ms(last.p99); $('t-p99-sub').textContent = 'p50 ' + ms(last.p50) + ' · max ' + ms(last.max);
    var groupLag = d.lag.groups.reduce(function (a, g) { return a + (g.lag || 0); }, 0);
    $('t-lag').textContent = num(d.lag.queue + d.lag.backlog + groupLag); $('t-lag-sub').textContent = num(d.lag.queue) + ' queued · ' + num(d.lag.backlog + groupLag) + ' in transport';
    $('t-dead').textContent = num(d.deadLetters.count); $('t-dead-sub').textContent = num(d.totals.retried) + ' retries · ' + num(d.totals.errors) + ' errors';
    var conns = Object.keys(d.connections).reduce(function (a, k) { return a + d.connections[k]; }, 0);
    $('t-conn').textContent = num(conns); $('t-conn-sub').textContent = Object.keys(d.connections).length + ' sources';
    $('t-rss').textContent = bytes(last.rssBytes); $('t-rss-sub').textContent = last.rssBytes > 536870912 ? 'above the 512 MB target' : 'target < 512 MB';
    chart($('c-rate'), $('l-rate'), [
      { key: 'handledPerSec', name: 'handled', color: '#2563eb' },
      { key: 'publishedPerSec', name: 'published here', color: '#16a34a', dash: true }
    ], h, 'rate');
    chart($('c-lat'), $('l-lat'), [
      { key: 'p50', name: 'p50', color: '#16a34a' },
      { key: 'p90', name: 'p90', color: '#2563eb' },
      { key: 'p99', name: 'p99', color: '#d97706' },
      { key: 'max', name: 'max', color: '#dc2626', width: 1, dash: true }
    ], h, 'ms');
    bars($('b-family'), Object.keys(d.byFamily).map(function (k) { return [k, d.byFamily[k]]; }).slice(0, 12));
    bars($('b-priority'), Object.keys(d.byPriority).map(function (k) { return [k, d.byPriority[k]]; }), function (k) { return PRI_COLORS[k]; });
    table($('connections'), [{ t: 'source' }, { t: 'open', n: 1 }], Object.keys(d.connections).map(function (k) { return [esc(k), num(d.connections[k])]; }), 'none');
    table($('circuits'), [{ t: 'circuit' }, { t: 'state' }, { t: 'failures', n: 1 }], d.circuits.map(function (c) {
      return [esc(c.source + ' / ' + c.name), '<span class="state ' + esc(c.state) + '">' + esc(c.state.replace('_', '-')) + '</span>', c.failures == null ? '–' : num(c.failures)];
    }), 'no circuit breakers configured');
    var lagRows = [['<b>bus queue</b> (accepted, not yet handled)', num(d.lag.queue)], ['handlers running', num(d.lag.inFlight)], ['waiting in the transport', num(d.lag.backlog)]];
    Object.keys(d.lag.queueByPriority).forEach(function (p) { if (d.lag.queueByPriority[p] > 0) lagRows.push(['queued at ' + esc(p), num(d.lag.queueByPriority[p])]); });
    d.lag.groups.forEach(function (g) { lagRows.push(['consumer group <code>' + esc(g.group) + '</code>', num(g.pending) + ' pending · ' + (g.lag == null ? '?' : num(g.lag)) + ' unread']); });
    d.lag.subscribers.forEach(function (s) { lagRows.push(['subscriber ' + esc(s.patterns.join(', ')) + (s.group ? ' (group ' + esc(s.group) + ')' : ''), num(s.queued) + ' queued · ' + num(s.processed) + ' done']); });
    table($('lag'), [{ t: 'where' }, { t: 'events', n: 1 }], lagRows, '');
    table($('dead'), [{ t: 'event type' }, { t: 'reason' }, { t: 'error' }, { t: 'when' }], d.deadLetters.recent.map(function (x) {
      return [esc(x.type), esc(x.reason) + ' (' + x.attempts + '×)', esc(x.error.slice(0, 80)), ago(x.deadAt)];
    }), 'no dead letters — every event was handled');
    sagas(d);
    contractsPanel(d);
    agentsPanel(d);
  }

  function sagas(d) {
    var order = ['running', 'compensating', 'completed', 'compensated', 'failed'];
    var colors = { running: '#2563eb', compensating: '#d97706', completed: '#16a34a', compensated: '#7c3aed', failed: '#dc2626' };
    // a count per status reached: 'running' is reached once per saga, so it reads as 'started'
    var label = function (k) { return k === 'running' ? 'started' : k; };
    colors.started = colors.running;
    bars($('b-sagas'), order.filter(function (k) { return d.sagas.counts[k]; }).map(function (k) { return [label(k), d.sagas.counts[k]]; }), function (k) { return colors[k]; });
    table($('sagas'), [{ t: 'saga' }, { t: 'transaction' }, { t: 'status' }, { t: 'step' }, { t: 'progress', n: 1 }, { t: 'updated' }], d.sagas.running.map(function (r) {
      return [esc(r.saga), '<code>' + esc(r.transactionId) + '</code>', esc(r.status), r.step ? esc(r.step) : '–', Math.round(r.progress * 100) + '%', ago(r.updatedAt)];
    }), 'no saga running now');
  }

  function agentsPanel(d) {
    var a = d.agents;
    var colors = { active: '#16a34a', idle: '#2563eb', busy: '#d97706', paused: '#7c3aed', failed: '#dc2626' };
    bars($('b-agents'), Object.keys(a.byStatus).map(function (k) { return [k, a.byStatus[k]]; }), function (k) { return colors[k] || '#667085'; });
    if (Object.keys(a.byStatus).length === 0) $('b-agents').innerHTML = '<div class="empty">no agent seen yet</div>';
    table($('pools'), [{ t: 'pool' }, { t: 'agents', n: 1 }, { t: 'running', n: 1 }, { t: 'utilization', n: 1 }], a.pools.map(function (p) {
      return [esc(p.pool), num(p.agents), num(p.active) + ' / ' + num(p.capacity), Math.round(p.utilization * 100) + '%'];
    }), '');
    var order = ['create', 'assigned', 'complete', 'fail', 'cancel'];
    bars($('b-tasks'), order.filter(function (k) { return a.tasks[k]; }).map(function (k) { return [k, a.tasks[k]]; }), function (k) { return k === 'fail' ? '#dc2626' : k === 'complete' ? '#16a34a' : '#2563eb'; });
  }

  function contractsPanel(d) {
    var c = d.contracts;
    $('contracts-card').style.display = c ? 'block' : 'none';
    if (!c) return;
    var rows = [];
    if (c.validation) {
      rows.push(['events checked against their contract', num(c.validation.checked)]);
      rows.push(['publishes refused (strict)', num(c.validation.publishRefused)]);
      rows.push(['invalid events published anyway (non-strict)', num(c.validation.publishInvalid)]);
      rows.push(['invalid events dead-lettered on consume', num(c.validation.consumeRejected)]);
    }
    if (c.crossProject) rows.push(['cross-project messages dead-lettered by their receiver', num(c.crossProject.receiveRejected)]);
    table($('contracts'), [{ t: 'contracts' }, { t: 'events', n: 1 }], rows, 'no contracts configured');
    var xp = c.crossProject ? c.crossProject.messages : {};
    bars($('b-xp'), Object.keys(xp).filter(function (k) { return xp[k] > 0; }).map(function (k) { return [k, xp[k]]; }), function (k) { return k === 'delivered' ? '#16a34a' : '#dc2626'; });
  }

  var failures = 0;
  function poll() {
    fetch('/api/dashboard', { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (d) { failures = 0; render(d); }).catch(function (e) {
      failures++;
      $('status').textContent = 'offline'; $('status').className = 'pill offline';
      $('updated').textContent = 'cannot reach the broker (' + e.message + ')';
    }).then(function () { setTimeout(poll, failures > 3 ? 5000 : 1000); });
  }
  poll();
})();
</script>
</body>
</html>
`;
}
