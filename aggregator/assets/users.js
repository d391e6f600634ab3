'use strict';
// Users for the administrator (the auditor reads the list). Names come from users: textContent only.
const ADMIN = MY_ROLE === 'admin';

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString('zh-CN', { hour12: false }) : '—';
}

function say(ok, text) {
  const r = document.getElementById('users-result');
  r.className = ok ? 'ok' : 'err';
  r.textContent = text;
}

async function call(method, url, body) {
  const r = await fetch(url, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error || ('HTTP ' + r.status));
  return answer;
}

function button(text, onClick) {
  const b = el('button', 'act', text);
  b.type = 'button';
  b.addEventListener('click', async () => {
    b.disabled = true;
    try { await onClick(); } catch (e) { say(false, e.message); }
    b.disabled = false;
    load();
  });
  return b;
}

function row(u) {
  const tr = el('tr', u.disabled ? 'disabled' : null);
  const tokens = u.tokens.filter(t => t.valid).length;
  const actions = el('td');
  if (ADMIN && u.name !== MY_NAME) {
    actions.append(
      button('重置密码', async () => {
        const a = await call('POST', '/api/users/' + encodeURIComponent(u.name) + '/password');
        say(true, u.name + ' 的新密码（只显示这一次）：' + a.password);
      }),
      button(u.disabled ? '启用' : '停用', async () => {
        await call('POST', '/api/users/' + encodeURIComponent(u.name) + '/disable', { disabled: !u.disabled });
        say(true, u.name + (u.disabled ? ' 已启用' : ' 已停用，其会话已结束、令牌不再有效'));
      }),
    );
  }
  tr.append(
    el('td', null, u.name),
    el('td', null, u.display_name),
    el('td', null, u.role_zh),
    el('td', null, u.unit || ''),
    el('td', null, u.disabled ? '已停用' : '正常'),
    el('td', 'num', fmtTime(u.password_changed_ms)),
    el('td', 'num', String(tokens)),
    actions,
  );
  return tr;
}

async function load() {
  const body = document.querySelector('#users .body');
  try {
    const a = await call('GET', '/api/users');
    const t = el('table');
    const head = el('tr');
    for (const c of ['登录名', '姓名', '角色', '所属单位', '状态', '密码修改时间', '有效令牌', '操作']) head.append(el('th', null, c));
    t.append(el('thead'), el('tbody'));
    t.tHead.append(head);
    t.tBodies[0].append(...a.users.map(row));
    body.replaceChildren(t);
  } catch (e) {
    body.replaceChildren(el('div', 'empty', '无法加载用户：' + e.message));
  }
}

const form = document.getElementById('new-user');
if (form) form.addEventListener('submit', async ev => {
  ev.preventDefault();
  const unit = document.getElementById('u-unit').value.trim();
  try {
    const a = await call('POST', '/api/users', {
      name: document.getElementById('u-name').value.trim(),
      display_name: document.getElementById('u-display').value.trim(),
      role: document.getElementById('u-role').value,
      unit: unit || null,
    });
    say(true, '已创建 ' + a.name + '（' + a.role_zh + '），初始密码（只显示这一次）：' + a.password);
    form.reset();
  } catch (e) {
    say(false, '未创建：' + e.message);
  }
  load();
});
load();
