'use strict';
// Names, reasons and files come from users: textContent only.
const POLL_MS = 5000;
const ID = location.pathname.split('/').pop();
const ROLE = { ops: '运维单位', authority: '主管部门', unit: '使用单位', system: '系统' };
const STEP = {
  submit: '提交申请', accept: '受理', refuse: '不予受理', resubmit: '整改后重新提交', review: '审核通过',
  approve: '审批通过', reject: '不予通过', provision: '开通（提供资源）', pass_test: '测试通过',
  go_live: '转为正式运行', confirm: '确认开通', carry_out: '办理完成', withdraw: '撤回申请', attach: '添加附件',
  shortfall: '资源不足，登记调整',
};
const STATE = {
  submitted: '待受理', returned: '不予受理（待整改）', accepted: '待审核', reviewed: '待审批', approved: '待开通', shortfall: '资源不足，调整中',
  testing: '测试中', trial: '试运行', opened: '待使用单位确认', in_service: '正式运行', done: '已办结',
  rejected: '未通过', withdrawn: '已撤回',
};
function fmtTime(ms) { return ms ? new Date(ms).toLocaleString('zh-CN', { hour12: false }) : '—'; }
function fmtDay(ms) { return ms ? new Date(ms - 1).toLocaleDateString('zh-CN') : '—'; }
function table(cols, rows) {
  const t = el('table');
  const head = el('tr');
  for (const c of cols) head.append(el('th', null, c));
  t.append(el('thead'), el('tbody'));
  t.tHead.append(head);
  t.tBodies[0].append(...rows);
  return t;
}
function tr(cells) { const r = el('tr'); for (const c of cells) r.append(el('td', null, c)); return r; }

function facts(b) {
  const v = b.view, a = v.application;
  document.getElementById('title').textContent = v.kind_zh + ' #' + a.id + ' · ' + a.unit;
  document.getElementById('meta').textContent = v.state_zh;
  const dl = document.getElementById('facts');
  dl.replaceChildren();
  const add = (k, val, cls) => { dl.append(el('dt', null, k), el('dd', cls, val)); };
  add('使用单位', a.unit);
  add('系统名称', a.system);
  add('需求背景', a.purpose || '—');
  add('状态', v.state_zh + '，自 ' + fmtTime(a.state_since_ms));
  add('等待', v.waiting_zh ? v.waiting_zh + '办理' : '—');
  add('本步截止', v.deadline ? v.deadline + '（' + (a.deadline_clause || '') + '）' + (v.overdue ? '，已逾期 ' + v.overdue_days + ' 个工作日' : '') : '本地区管理办法未规定时限', v.overdue ? 'overdue' : '');
  if (a.period_until_ms) add(a.state === 'trial' ? '试运行至少至' : '测试期至', fmtDay(a.period_until_ms));
  if (a.ends_ms) add(a.kind === 'new' ? '服务期满（续期日）' : '使用期限至', fmtDay(a.ends_ms));
  add('依据', b.profile);
}

function steps(b) {
  const box = document.getElementById('steps');
  box.replaceChildren();
  const offers = b.view.steps;
  if (!offers.length) { box.append(el('span', 'muted', '当前无可由您办理的步骤')); return; }
  for (const s of offers) {
    const btn = el('button', 'act' + (['refuse', 'reject', 'withdraw', 'shortfall'].includes(s.step) ? ' danger' : ''), s.zh);
    btn.type = 'button';
    btn.title = s.clause;
    btn.addEventListener('click', () => act(s, btn));
    box.append(btn);
  }
}

async function act(s, btn) {
  const res = document.getElementById('result');
  const reason = document.getElementById('reason').value;
  if (s.needs_reason && !reason.trim()) { res.textContent = '“' + s.zh + '”须填写理由'; res.className = 'err'; return; }
  btn.disabled = true;
  try {
    const r = await fetch('/api/applications/' + ID + '/steps/' + s.step, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ reason }),
    });
    const j = await r.json();
    res.textContent = r.ok ? '已办理：' + s.zh : '未办理：' + j.error;
    res.className = r.ok ? 'ok' : 'err';
  } finally {
    poll();
  }
}

function request(b) {
  const a = b.view.application, q = a.request, box = document.getElementById('request');
  if (q.kind === 'grant') {
    box.replaceChildren(table(['网络分区', '子系统', '服务器类型', 'vCPU', '内存 GB', '系统盘 GB', '数据盘 GB', '操作系统'],
      q.vms.map(v => tr([v.zone, v.subsystem, v.server_type, v.vcpus, v.mem_gb, v.sys_disk_gb, v.data_disk_gb, v.os]))));
  } else if (q.kind === 'change') {
    box.replaceChildren(table(['虚拟机 UUID', '新 vCPU', '新内存 GB', '新系统盘 GB', '新数据盘 GB'],
      q.changes.map(c => tr([c.uuid, c.vcpus ?? '不变', c.mem_gb ?? '不变', c.sys_disk_gb ?? '不变', c.data_disk_gb ?? '不变']))));
  } else {
    const rows = q.uuids.map(u => tr([u]));
    box.replaceChildren(table(['虚拟机 UUID'], rows));
    if (q.declaration) box.append(el('p', null, '单位声明：' + q.declaration));
    if (q.ends_ms) box.append(el('p', null, '延期至：' + fmtDay(q.ends_ms)));
  }
}

function attachments(b) {
  const a = b.view.application, box = document.getElementById('attachments');
  if (!a.attachments.length) { box.replaceChildren(el('div', 'empty', '暂无附件')); return; }
  box.replaceChildren(table(['类别', '文件', '大小', 'SHA-256', '上传人', '时间'], a.attachments.map(f => {
    const r = el('tr');
    const link = el('a', null, f.name);
    link.href = '/api/applications/' + a.id + '/attachments/' + f.id;
    const name = el('td');
    name.append(link);
    r.append(el('td', null, f.kind), name, el('td', null, f.size + ' 字节'), el('td', 'muted', f.sha256.slice(0, 16) + '…'), el('td', null, f.by), el('td', null, fmtTime(f.ts_ms)));
    return r;
  })));
}

function timeline(b) {
  document.getElementById('timeline').replaceChildren(table(['时间', '办理人', '角色', '步骤', '状态', '意见 / 理由'],
    b.timeline.map(l => tr([fmtTime(l.ts_ms), l.actor, ROLE[l.role] || l.role, STEP[l.step] || l.step,
      (l.from ? (STATE[l.from] || l.from) + ' → ' : '') + (STATE[l.to] || l.to), l.reason || '']))));
}

document.getElementById('attach-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  const res = document.getElementById('a-result');
  const file = document.getElementById('a-file').files[0];
  if (!file) { res.textContent = '请选择文件'; res.className = 'err'; return; }
  const qs = new URLSearchParams({ kind: document.getElementById('a-kind').value, name: file.name });
  const r = await fetch('/api/applications/' + ID + '/attachments?' + qs, { method: 'POST', body: file });
  const j = await r.json();
  res.textContent = r.ok ? '已上传' : '未上传：' + j.error;
  res.className = r.ok ? 'ok' : 'err';
  poll();
});

async function poll() {
  const conn = document.getElementById('conn');
  try {
    const r = await fetch('/api/applications/' + ID);
    if (!r.ok) throw new Error(r.status);
    const b = await r.json();
    facts(b); steps(b); request(b); attachments(b); timeline(b);
    conn.textContent = '已连接';
    conn.className = 'up';
  } catch (e) {
    conn.textContent = '连接中断';
    conn.className = 'down';
  }
}
poll();
setInterval(poll, POLL_MS);
