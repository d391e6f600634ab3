'use strict';
// One's own password and API tokens.
function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString('zh-CN', { hour12: false }) : '—';
}

function say(ok, text) {
  const r = document.getElementById('account-result');
  r.className = ok ? 'ok' : 'err';
  r.textContent = text;
}

async function call(method, url, body) {
  const r = await fetch(url, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 204) return {};
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error || ('HTTP ' + r.status));
  return answer;
}

async function loadTokens() {
  const body = document.querySelector('#tokens .body');
  try {
    const a = await call('GET', '/api/account/tokens');
    if (!a.tokens.length) {
      body.replaceChildren(el('div', 'empty', '还没有令牌'));
      return;
    }
    const t = el('table');
    const head = el('tr');
    for (const c of ['编号', '用途', '创建时间', '到期时间', '状态', '操作']) head.append(el('th', null, c));
    t.append(el('thead'), el('tbody'));
    t.tHead.append(head);
    for (const k of a.tokens) {
      const tr = el('tr');
      const act = el('td');
      if (k.valid) {
        const b = el('button', 'act', '吊销');
        b.type = 'button';
        b.addEventListener('click', async () => {
          try {
            await call('POST', '/api/account/tokens/' + encodeURIComponent(k.id) + '/revoke');
            say(true, '令牌 ' + k.id + ' 已吊销');
          } catch (e) { say(false, e.message); }
          loadTokens();
        });
        act.append(b);
      }
      tr.append(el('td', null, k.id), el('td', null, k.label), el('td', 'num', fmtTime(k.created_ms)),
        el('td', 'num', fmtTime(k.expires_ms)), el('td', null, k.revoked_ms ? '已吊销' : (k.valid ? '有效' : '已过期')), act);
      t.tBodies[0].append(tr);
    }
    body.replaceChildren(t);
  } catch (e) {
    body.replaceChildren(el('div', 'empty', '无法加载令牌：' + e.message));
  }
}

document.getElementById('password-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  try {
    await call('POST', '/api/account/password', {
      old: document.getElementById('old').value,
      new: document.getElementById('new').value,
    });
    say(true, '密码已修改');
    ev.target.reset();
  } catch (e) {
    say(false, '未修改：' + e.message);
  }
});

document.getElementById('token-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  try {
    const a = await call('POST', '/api/account/tokens', {
      label: document.getElementById('label').value.trim(),
      days: Number(document.getElementById('days').value),
    });
    say(true, '令牌（只显示这一次，请妥善保存）：' + a.token);
    ev.target.reset();
  } catch (e) {
    say(false, '未创建：' + e.message);
  }
  loadTokens();
});
loadTokens();
