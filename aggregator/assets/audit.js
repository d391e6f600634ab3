'use strict';
// The audit log, read-only. Every value comes from users and agents: textContent only.
const ROLE_ZH = { admin: '系统管理员', ops: '运维单位', authority: '主管部门', unit: '使用单位', auditor: '审计人员', system: '系统' };

function fmtTime(ms) {
  return new Date(ms).toLocaleString('zh-CN', { hour12: false });
}

function query() {
  const q = new URLSearchParams();
  for (const [id, key] of [['f-actor', 'actor'], ['f-action', 'action'], ['f-subject', 'subject'], ['f-from', 'from'], ['f-to', 'to']]) {
    const v = document.getElementById(id).value.trim();
    if (v) q.set(key, v);
  }
  return q;
}

function row(e) {
  const tr = el('tr');
  tr.append(
    el('td', 'num', fmtTime(e.ts_ms)),
    el('td', null, e.actor),
    el('td', null, ROLE_ZH[e.role] || e.role || '—'),
    el('td', null, e.unit || ''),
    el('td', null, e.source || ''),
    el('td', null, e.action),
    el('td', null, e.subject),
    el('td', 'detail', JSON.stringify(e.detail)),
  );
  return tr;
}

async function load() {
  const q = query();
  document.getElementById('export').href = '/api/audit/export.xlsx' + (q.toString() ? '?' + q : '');
  const meta = document.getElementById('audit-meta');
  const body = document.querySelector('#entries .body');
  try {
    const r = await fetch('/api/audit?' + q, { cache: 'no-store' });
    const entries = await r.json();
    if (!r.ok) throw new Error(entries.error || ('HTTP ' + r.status));
    meta.textContent = entries.length + ' 条';
    if (!entries.length) {
      body.replaceChildren(el('div', 'empty', '没有符合条件的审计记录'));
      return;
    }
    const t = el('table');
    const head = el('tr');
    for (const c of ['时间', '操作人', '角色', '单位', '来源地址', '操作', '对象', '详情']) head.append(el('th', null, c));
    t.append(el('thead'), el('tbody'));
    t.tHead.append(head);
    t.tBodies[0].append(...entries.map(row));
    body.replaceChildren(t);
  } catch (e) {
    meta.textContent = '查询失败：' + e.message;
  }
}

document.getElementById('filters').addEventListener('submit', ev => {
  ev.preventDefault();
  load();
});
load();
