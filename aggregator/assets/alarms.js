'use strict';
// Titles, units and names come from the rules and from users: only ever set with textContent.
const POLL_MS = 5000;
const LEVEL = { info: '提示', warning: '预警', major: '严重', critical: '紧急' };
const STATE = { active: '未确认', acknowledged: '已确认', cleared: '已解除' };

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString('zh-CN', { hour12: false }) : '—';
}

function table(columns, rows) {
  const t = el('table');
  const head = el('tr');
  for (const c of columns) head.append(el('th', null, c));
  t.append(el('thead'), el('tbody'));
  t.tHead.append(head);
  t.tBodies[0].append(...rows);
  return t;
}

function levelCell(a) {
  const td = el('td');
  td.append(el('span', 'level ' + a.level, LEVEL[a.level] || a.level));
  return td;
}

function openRow(a) {
  const tr = el('tr', a.state);
  tr.dataset.id = String(a.id);
  const action = el('td');
  if (a.state === 'active' && MY_ROLE === 'ops') {
    const b = el('button', 'ack', '确认');
    b.type = 'button';
    b.addEventListener('click', () => acknowledge(a.id, b));
    action.append(b);
  } else if (a.state !== 'active') {
    action.textContent = (a.acked_by || '') + ' ' + fmtTime(a.acked_ms);
  }
  tr.append(
    levelCell(a),
    el('td', null, a.clause),
    el('td', 'title', a.title),
    el('td', null, a.unit || '—'),
    el('td', 'num', fmtTime(a.raised_ms)),
    el('td', 'num', String(a.count)),
    el('td', 'state', STATE[a.state] || a.state),
    action,
  );
  return tr;
}

function clearedRow(a) {
  const tr = el('tr', 'cleared');
  tr.dataset.id = String(a.id);
  tr.append(
    levelCell(a),
    el('td', null, a.clause),
    el('td', 'title', a.title),
    el('td', null, a.unit || '—'),
    el('td', 'num', fmtTime(a.raised_ms)),
    el('td', 'num', fmtTime(a.cleared_ms)),
    el('td', 'num', String(a.count)),
    el('td', null, a.acked_by ? '已确认（' + a.acked_by + '）' : '未确认'),
  );
  return tr;
}

function fill(id, content) {
  document.querySelector('#' + id + ' .body').replaceChildren(content);
}

function render(body) {
  const unacked = body.open.filter(a => a.state === 'active').length;
  document.getElementById('open-meta').textContent =
    body.open.length + ' 条，其中 ' + unacked + ' 条未确认';
  fill('open', body.open.length
    ? table(['级别', '条款', '告警', '使用单位', '产生时间', '次数', '状态', '确认'], body.open.map(openRow))
    : el('div', 'empty', '当前没有未解除的告警'));
  fill('cleared', body.cleared.length
    ? table(['级别', '条款', '告警', '使用单位', '产生时间', '解除时间', '次数', '确认'], body.cleared.map(clearedRow))
    : el('div', 'empty', '暂无已解除的告警'));
}

function result(ok, text) {
  const r = document.getElementById('ack-result');
  r.className = ok ? 'ok' : 'err';
  r.textContent = text;
}

async function acknowledge(id, button) {
  button.disabled = true;
  try {
    const r = await fetch('/api/alarms/' + id + '/ack', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({}),
    });
    const answer = await r.json().catch(() => ({}));
    if (r.ok) {
      result(true, '已确认告警 #' + id + '（确认人：' + answer.acked_by + '，' + fmtTime(answer.acked_ms) + '）');
    } else {
      result(false, '确认告警 #' + id + ' 失败：' + (answer.error || 'HTTP ' + r.status));
    }
  } catch (e) {
    result(false, '确认告警 #' + id + ' 失败：无法连接服务器');
  }
  button.disabled = false;
  poll();
}

function setConn(ok) {
  const c = document.getElementById('conn');
  c.className = ok ? 'poll' : 'down';
  c.textContent = ok
    ? '每 5 秒刷新 · 更新于 ' + new Date().toLocaleTimeString('zh-CN', { hour12: false })
    : '连接中断，重试中…';
}

async function poll() {
  try {
    const r = await fetch('/api/alarms', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    render(await r.json());
    setConn(true);
  } catch (e) {
    setConn(false);
  }
}

poll();
setInterval(poll, POLL_MS);
