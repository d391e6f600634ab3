'use strict';
// Names from the register (pools) are only ever set with textContent.
const POLL_MS = 10000;
const COLUMNS = ['资源', '物理总量', '预留', '容量', '分配率', '已分配', '使用率', '已使用', '分配状态', '使用状态', '趋势预测'];
const LEVEL = { info: '提示', warning: '预警', major: '严重', critical: '紧急' };

function fmtNum(v) {
  if (v == null) return '—';
  return v >= 100 ? Math.round(v).toLocaleString('zh-CN') : v.toFixed(v >= 10 ? 1 : 2);
}

function fmtPct(v) { return v == null ? '—' : v.toFixed(1) + '%'; }

function fmtTime(ms) {
  if (!ms) return '—';
  return new Date(ms).toLocaleString('zh-CN', { hour12: false });
}

let body = null;

function crit() {
  const e = body.escalate.map(x => x.pct);
  return e.length ? Math.min(...e) : 101;
}

function gauge(kind, pct) {
  const td = el('td', 'num');
  if (pct == null) { td.textContent = '—'; return td; }
  const lv = pct >= crit() ? 'crit' : pct >= body.warn_pct ? 'warn' : '';
  const g = el('span', lv ? 'gauge ' + lv : 'gauge');
  g.dataset.kind = kind;
  g.title = fmtPct(pct) + '（预警线 ' + body.warn_pct + '%）';
  const fill = el('span', 'fill');
  fill.style.width = Math.min(100, Math.max(0, pct)) + '%';
  const mark = el('span', 'mark');
  mark.style.left = body.warn_pct + '%';
  g.append(fill, mark);
  td.append(g, el('span', lv ? 'pct ' + lv : 'pct', fmtPct(pct)));
  return td;
}

function stateCell(kind, s) {
  const td = el('td');
  td.dataset.kind = kind;
  if (!s) { td.append(el('span', 'state none', '无数据')); return td; }
  let text;
  if (s.state === 'firing') {
    text = (LEVEL[s.level] || s.level) + '告警 #' + s.alarm_id + (s.acknowledged ? '（已确认）' : '');
  } else if (s.state === 'pending') {
    const hold = body.hold_s >= 60 ? Math.round(body.hold_s / 60) + ' 分钟' : body.hold_s + ' 秒';
    text = '超线，持续 ' + hold + '后告警';
  } else {
    text = '正常';
  }
  td.append(el('span', 'state ' + s.state, text));
  return td;
}

function forecastCell(f) {
  if (!f) return el('td', 'forecast', '—');
  const td = el('td', f.level === 'warning' ? 'forecast soon' : 'forecast',
    '预计 ' + f.date + ' 达到 ' + body.warn_pct + '%');
  td.title = '约 ' + f.days_left.toFixed(1) + ' 天后（按近 ' + body.forecast_window_days + ' 天趋势）';
  return td;
}

function figure(v, unit) {
  return el('td', 'figure', v == null ? '—' : fmtNum(v) + ' ' + unit);
}

function resourceRow(r) {
  const tr = el('tr');
  tr.dataset.resource = r.resource;
  tr.append(
    el('td', 'name', r.label),
    figure(r.total, r.unit),
    figure(r.reserved, r.unit),
    figure(r.capacity, r.unit),
    gauge('allocated', r.allocated_pct),
    figure(r.allocated, r.unit),
    gauge('used', r.used_pct),
    figure(r.used, r.unit),
    stateCell('allocated', r.allocated_state),
    stateCell('used', r.used_state),
    forecastCell(r.forecast),
  );
  return tr;
}

function scopeSection(s) {
  const sec = el('section', 'group');
  sec.dataset.scope = s.id;
  const h = el('h2', null, s.name);
  let meta = s.hosts + ' 台物理服务器 · ' + s.vms + ' 台虚拟机';
  if (s.unregistered_vms) meta += '（' + s.unregistered_vms + ' 台未登记，不计入分配）';
  if (s.hosts_missing) meta += ' · ' + s.hosts_missing + ' 台未上报';
  meta += ' · 数据时间 ' + fmtTime(s.ts_ms);
  h.append(el('span', 'meta', meta));
  const table = el('table', 'cap');
  const head = el('tr');
  for (const c of COLUMNS) head.append(el('th', null, c));
  table.append(el('thead'), el('tbody'));
  table.tHead.append(head);
  table.tBodies[0].append(...s.resources.map(resourceRow));
  sec.append(h, table);
  return sec;
}

function render() {
  document.getElementById('line-text').textContent =
    (body.prewarn_pct != null ? body.prewarn_pct + '% 提前预警（提示），' : '') +
    body.warn_pct + '% 预警线，低于 ' + body.recovery_pct + '% 解除 · 依据 ' + body.clause;
  const sections = body.scopes.map(scopeSection);
  if (body.scopes.every(s => s.hosts === 0)) {
    sections.unshift(el('div', 'empty', '暂无物理服务器上报数据'));
  }
  document.getElementById('scopes').replaceChildren(...sections);
}

function setConn(ok) {
  const c = document.getElementById('conn');
  c.className = ok ? 'poll' : 'down';
  c.textContent = ok
    ? '每 10 秒刷新 · 更新于 ' + new Date().toLocaleTimeString('zh-CN', { hour12: false })
    : '连接中断，重试中…';
}

async function poll() {
  try {
    const r = await fetch('/api/capacity', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    body = await r.json();
    render();
    setConn(true);
  } catch (e) {
    setConn(false);
  }
}

poll();
setInterval(poll, POLL_MS);
