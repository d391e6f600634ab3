'use strict';
// Agent-supplied text (node ids, hostnames, racks) is only ever set with textContent or
// setAttribute: nothing from the API is parsed as HTML.
const WARN = 70, CRIT = 85, POLL_MS = 5000, SSE_RETRY_POLLS = 6;
const COLUMNS = ['节点', '主机名', '状态', 'CPU', '内存', '磁盘', '网络 ↓ / ↑', '规格', '最后上报'];
const LIVENESS = { online: '在线', silent: '静默', offline: '离线' };

let latest = null;     // last /api/nodes body
let skewMs = 0;        // server clock minus browser clock

function level(v) {
  if (v == null) return '';
  return v >= CRIT ? 'crit' : v >= WARN ? 'warn' : '';
}

function fmtPct(v) { return v == null ? '—' : v.toFixed(1) + '%'; }

function fmtRate(bytesPerSec) {
  if (bytesPerSec == null) return '—';
  const units = ['B/s', 'KB/s', 'MB/s', 'GB/s', 'TB/s'];
  let v = bytesPerSec, i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
}

function fmtMem(kib) {
  const gib = kib / 1048576;
  return (gib >= 10 ? gib.toFixed(0) : gib.toFixed(1)) + ' GiB';
}

function fmtAge(lastSeenMs) {
  if (!lastSeenMs) return '—';
  const s = Math.max(0, Math.floor((Date.now() + skewMs - lastSeenMs) / 1000));
  if (s < 60) return s + ' 秒前';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' 分钟前';
  const h = Math.floor(m / 60);
  return h < 48 ? h + ' 小时前' : Math.floor(h / 24) + ' 天前';
}

function gaugeCell(metric, label, v) {
  const td = el('td', 'num');
  const lv = level(v);
  const g = el('span', lv ? 'gauge ' + lv : 'gauge');
  g.dataset.metric = metric;
  g.title = label + ' ' + fmtPct(v) + '（警戒线 70%）';
  const fill = el('span', 'fill');
  fill.style.width = Math.min(100, Math.max(0, v || 0)) + '%';
  g.append(fill, el('span', 'mark'));
  td.append(g, el('span', lv ? 'pct ' + lv : 'pct', fmtPct(v)));
  return td;
}

function specText(n) {
  const parts = [];
  if (n.cpu_cores != null) parts.push(n.cpu_cores + ' 核');
  if (n.mem_total_kib != null) parts.push(fmtMem(n.mem_total_kib));
  if (n.role === 'host') parts.push(n.vm_count + ' 台虚拟机');
  return parts.join(' · ') || '—';
}

function row(n, kind) {
  const tr = el('tr', kind + ' ' + n.liveness);
  tr.dataset.node = n.node;
  if (kind === 'vm' && n.host) tr.dataset.host = n.host;
  const name = el('td', 'name');
  name.append(el('span', 'id', n.node));
  const state = el('td');
  state.append(el('span', 'badge ' + n.liveness, LIVENESS[n.liveness] || n.liveness));
  const age = el('td', 'age', fmtAge(n.last_seen_ms));
  age.dataset.seen = String(n.last_seen_ms);
  tr.append(
    name,
    el('td', 'hostname', n.hostname || '—'),
    state,
    gaugeCell('cpu', 'CPU', n.cpu_pct),
    gaugeCell('mem', '内存', n.mem_pct),
    gaugeCell('disk', '磁盘', n.disk_pct),
    el('td', 'num', fmtRate(n.net_rx_bps) + ' / ' + fmtRate(n.net_tx_bps)),
    el('td', 'spec', specText(n)),
    age,
  );
  return tr;
}

function alerting(n) {
  return n.liveness !== 'online' || [n.cpu_pct, n.mem_pct, n.disk_pct].some(v => v != null && v >= WARN);
}

function textMatch(n, q) {
  return !q || [n.node, n.hostname, n.rack].some(s => s && s.toLowerCase().includes(q));
}

function group(title, meta, rows) {
  const sec = el('section', 'group');
  const h = el('h2', null, title);
  h.append(el('span', 'meta', meta));
  const table = el('table');
  const head = el('tr');
  for (const c of COLUMNS) head.append(el('th', null, c));
  table.append(el('thead'), el('tbody'));
  table.tHead.append(head);
  table.tBodies[0].append(...rows);
  sec.append(h, table);
  return sec;
}

function render() {
  if (!latest) return;
  const t = latest.totals;
  document.getElementById('t-hosts').textContent = t.hosts;
  document.getElementById('t-guests').textContent = t.guests;
  document.getElementById('t-online').textContent = t.online;
  document.getElementById('t-silent').textContent = t.silent;
  document.getElementById('t-offline').textContent = t.offline;

  const q = document.getElementById('filter').value.trim().toLowerCase();
  const onlyAlert = document.getElementById('only-alert').checked;
  const keep = n => textMatch(n, q) && (!onlyAlert || alerting(n));

  // Hosts (and nodes whose role is not known yet) own rows; VMs hang under their host.
  const parents = latest.nodes.filter(n => n.role !== 'guest');
  const parentIds = new Set(parents.map(n => n.node));
  const children = new Map();
  const orphans = [];
  for (const n of latest.nodes) {
    if (n.role !== 'guest') continue;
    if (n.host && parentIds.has(n.host)) {
      if (!children.has(n.host)) children.set(n.host, []);
      children.get(n.host).push(n);
    } else {
      orphans.push(n);
    }
  }

  const hostRows = p => {
    const kids = children.get(p.node) || [];
    const shownKids = kids.filter(k => keep(k) || (textMatch(p, q) && (!onlyAlert || alerting(k))));
    if (!keep(p) && shownKids.length === 0) return [];
    return [row(p, 'host'), ...shownKids.map(k => row(k, 'vm'))];
  };

  const racks = new Map();
  const unknown = [];
  for (const p of parents) {
    if (p.role !== 'host') { unknown.push(p); continue; }
    const key = p.rack || '';
    if (!racks.has(key)) racks.set(key, []);
    racks.get(key).push(p);
  }
  const rackNames = [...racks.keys()].sort((a, b) => (a === '') - (b === '') || a.localeCompare(b));

  const sections = [];
  for (const name of rackNames) {
    const hosts = racks.get(name);
    const rows = hosts.flatMap(hostRows);
    if (rows.length === 0) continue;
    const vms = hosts.reduce((sum, h) => sum + (children.get(h.node) || []).length, 0);
    const down = hosts.filter(h => h.liveness !== 'online').length;
    let meta = hosts.length + ' 台物理服务器 · ' + vms + ' 台虚拟机';
    if (down) meta += ' · ' + down + ' 台异常';
    sections.push(group(name ? '机柜 ' + name : '未分配机柜', meta, rows));
  }
  const orphanRows = orphans.filter(keep).map(n => row(n, 'vm'));
  if (orphanRows.length && MY_UNIT) {
    // a using unit is shown its own VMs only, never the hosts that run them
    sections.push(group(MY_UNIT + ' 的虚拟机', orphans.length + ' 台虚拟机', orphanRows));
  } else if (orphanRows.length) {
    sections.push(group('未关联宿主机', orphans.length + ' 台虚拟机（宿主机未上报其虚拟机清单）', orphanRows));
  }
  const unknownRows = unknown.flatMap(hostRows);
  if (unknownRows.length) {
    sections.push(group('未识别角色', unknown.length + ' 个节点（尚未上报身份信息）', unknownRows));
  }
  if (sections.length === 0) {
    sections.push(el('div', 'empty', latest.nodes.length ? '没有符合筛选条件的节点' : '暂无节点上报数据'));
  }
  document.getElementById('groups').replaceChildren(...sections);
}

function accept(body) {
  latest = body;
  skewMs = body.now_ms - Date.now();
  render();
}

function setConn(mode) {
  const c = document.getElementById('conn');
  const now = new Date().toLocaleTimeString('zh-CN', { hour12: false });
  c.className = mode;
  c.textContent = mode === 'live' ? '实时推送 · 更新于 ' + now
    : mode === 'poll' ? '轮询（每 5 秒）· 更新于 ' + now
    : '连接中断，重试中…';
}

// Live updates: Server-Sent Events; if they fail, poll /api/nodes every 5 s and retry the
// stream every 30 s.
let source = null, pollTimer = null, polls = 0;

function connect() {
  if (!window.EventSource) { startPolling(); return; }
  source = new EventSource('/api/events');
  source.addEventListener('nodes', ev => {
    stopPolling();
    accept(JSON.parse(ev.data));
    setConn('live');
  });
  source.onerror = () => {
    source.close();
    source = null;
    startPolling();
  };
}

function startPolling() {
  if (pollTimer) return;
  poll();
  pollTimer = setInterval(poll, POLL_MS);
}

function stopPolling() {
  if (!pollTimer) return;
  clearInterval(pollTimer);
  pollTimer = null;
}

async function poll() {
  try {
    const r = await fetch('/api/nodes', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    accept(await r.json());
    setConn('poll');
  } catch (e) {
    setConn('down');
  }
  polls += 1;
  if (!source && window.EventSource && polls % SSE_RETRY_POLLS === 0) connect();
}

document.getElementById('filter').addEventListener('input', render);
document.getElementById('only-alert').addEventListener('change', render);
setInterval(() => {
  for (const td of document.querySelectorAll('td.age')) td.textContent = fmtAge(Number(td.dataset.seen));
}, 1000);
connect();
