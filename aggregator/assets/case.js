'use strict';
// Names, reasons and messages come from users, the register and agents: textContent only.
const POLL_MS = 5000;
const ID = location.pathname.split('/').pop();
const STATE = {
  detected: '已发现', notified: '已通知使用单位', agreed: '单位同意', disputed: '单位有异议',
  filed: '已报主管部门', approved: '已批准', scheduled: '已排期', executing: '执行中（待主机确认）',
  execution_failed: '执行失败/超时', executed: '已执行', verified: '已核实', releasing: '释放中',
  closed: '已关闭', withdrawn: '已撤销', rejected: '已驳回', rolling_back: '回退中', rolled_back: '已回退',
};
const STEP = {
  notify: '通知使用单位', agree: '同意', dispute: '提出异议', settle: '协商一致（异议后同意）',
  handover: '确认数据已迁移/备份（交接）', limit: '限制服务（拒不整改）', unlimit: '解除服务限制',
  limit_result: '限制服务回执',
  file: '报主管部门备案', approve: '批准',
  reject: '驳回', schedule: '排期执行', withdraw: '撤销', retry: '重新执行', close: '关闭（到期释放）',
  rollback: '回退', detect: '发现', execute: '执行', succeeded: '执行成功', failed: '执行失败',
  verify: '核实', released: '已释放', rolled_back: '已回退', late_result: '迟到回执',
};
const ROLE = { ops: '运维单位', authority: '主管部门', unit: '使用单位', system: '系统' };
const SVG = 'http://www.w3.org/2000/svg';
// the signed-in person, from the page header
const me = MY_ROLE ? { name: MY_NAME, role: MY_ROLE, unit: MY_UNIT } : null;
let chartFor = null;

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
function fmtTime(ms) { return ms ? new Date(ms).toLocaleString('zh-CN', { hour12: false }) : '—'; }
function kindText(k) {
  if (k.kind === 'idle') return '闲置：先快照，再停机；保留期满后释放';
  const r = k.recommended;
  return '配置过度：先快照，再降配至 ' + r.vcpus + ' 核 / ' + Math.round(r.mem_kib / 1048576) + ' GiB';
}
function table(cols, rows) {
  const t = el('table');
  const head = el('tr');
  for (const c of cols) head.append(el('th', null, c));
  t.append(el('thead'), el('tbody'));
  t.tHead.append(head);
  t.tBodies[0].append(...rows);
  return t;
}

function facts(b) {
  const v = b.case, c = v.case;
  document.getElementById('title').textContent = '回收工单 #' + c.id + ' · ' + c.unit;
  document.getElementById('meta').textContent = STATE[c.state] || c.state;
  const dl = document.getElementById('facts');
  dl.replaceChildren();
  const add = (k, val, cls) => { dl.append(el('dt', null, k), el('dd', cls, val)); };
  add('使用单位', c.unit);
  add('系统 / 虚拟机', c.vm_name + '（' + c.uuid + '）');
  add('类型', kindText(c.kind));
  add('状态', (STATE[c.state] || c.state) + '，自 ' + fmtTime(c.state_since_ms));
  add('当前步骤截止', v.deadline ? v.deadline + (v.overdue ? '，已逾期 ' + v.overdue_days + ' 个工作日' : '') : '—', v.overdue ? 'overdue' : '');
  // why the VM is taken back: low use (the evidence below), an approved termination, an ended term
  if (c.basis && c.basis.basis === 'application') add('依据', '使用单位的终止申请 #' + c.basis.application + '（已批准；其声明即数据交接）');
  if (c.basis && c.basis.basis === 'expired') add('依据', '测试/临时资源已于 ' + fmtTime(c.basis.ends_ms - 1) + ' 到期，未获批延期或转正式');
  if (c.scheduled_ms) add('排期', fmtTime(c.scheduled_ms));
  if (c.host) add('宿主机', c.host);
  if (c.snapshot) add('快照', c.snapshot);
  if (c.hold_until_ms) add('保留至', fmtTime(c.hold_until_ms));
  if (c.disputed) add('协商', '使用单位提出异议，尚未记录协商一致', 'overdue');
  if (c.total_deadline_ms) add('审核与回收总时限', fmtTime(c.total_deadline_ms - 1));
  if (c.kind.kind === 'idle') {
    add('数据交接', c.handover_ms ? '使用单位已确认数据已迁移/备份（' + fmtTime(c.handover_ms) + '）' : '待使用单位确认数据已迁移/备份（确认前不释放）', c.handover_ms ? '' : 'overdue');
  }
  if (c.limited_ms) add('服务限制', '自 ' + fmtTime(c.limited_ms) + ' 起限制（vCPU 与磁盘 I/O 上限）', 'overdue');
  if (c.note) add('说明', c.note, 'overdue');
  if (v.command) add('当前指令', v.command.id + ' · ' + v.command.status + ' · ' + (v.command.message || '等待主机回执'));
}

function steps(b) {
  const box = document.getElementById('steps');
  box.replaceChildren();
  for (const s of b.steps) {
    const allowed = me && s.roles.includes(me.role) && (me.role !== 'unit' || me.unit === b.case.case.unit);
    const btn = el('button', 'act' + (['reject', 'withdraw', 'rollback', 'dispute'].includes(s.step) ? ' danger' : ''), STEP[s.step] || s.step);
    btn.type = 'button';
    btn.disabled = !allowed;
    btn.title = '可操作角色：' + s.roles.map(r => ROLE[r]).join('、');
    btn.addEventListener('click', () => act(s.step, btn));
    box.append(btn);
  }
}

function timeline(b) {
  const rows = b.timeline.map(l => {
    const tr = el('tr');
    const who = el('td');
    who.append(el('span', null, l.actor), el('span', 'muted', ROLE[l.role] || l.role));
    tr.append(el('td', null, fmtTime(l.ts_ms)), who, el('td', null, STEP[l.step] || l.step),
      el('td', null, (l.from ? (STATE[l.from] || l.from) + ' → ' : '') + (STATE[l.to] || l.to)),
      el('td', null, l.reason || '—'));
    return tr;
  });
  document.getElementById('timeline').replaceChildren(table(['时间', '操作人', '步骤', '状态', '理由'], rows));
}

function commands(b) {
  const rows = b.commands.map(c => {
    const tr = el('tr');
    const kind = typeof c.action === 'string' ? c.action : Object.keys(c.action)[0];
    tr.append(el('td', null, c.id), el('td', null, kind), el('td', null, c.node), el('td', null, c.status),
      el('td', null, String(c.sends)), el('td', null, fmtTime(c.created_ms)), el('td', null, fmtTime(c.expires_ms)),
      el('td', null, c.message || '—'));
    return tr;
  });
  const box = document.getElementById('commands');
  box.replaceChildren(rows.length ? table(['指令号', '动作', '宿主机', '状态', '发送次数', '创建', '过期', '回执'], rows) : el('div', 'empty', '尚未下发指令'));
}

async function chart(uuid) {
  const box = document.getElementById('chart');
  try {
    const r = await fetch('/api/usage/' + encodeURIComponent(uuid) + '/days');
    if (!r.ok) throw new Error(r.status);
    const days = (await r.json()).days || [];
    if (!days.length) { box.replaceChildren(el('div', 'empty', '暂无利用率历史')); return; }
    const W = 720, H = 180, L = 36, B = 20;
    const max = Math.max(10, ...days.map(d => d.cpu_p95_pct));
    const x = i => L + (days.length === 1 ? 0 : i * (W - L - 8) / (days.length - 1));
    const y = v => H - B - v / max * (H - B - 8);
    const s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, width: '100%', role: 'img', 'aria-label': '每日 CPU p95 与均值' });
    for (const t of [0, max / 2, max]) {
      s.append(svg('line', { x1: L, x2: W - 8, y1: y(t), y2: y(t), stroke: '#e5e7eb' }));
      const lbl = svg('text', { x: 2, y: y(t) + 3 });
      lbl.textContent = t.toFixed(1) + '%';
      s.append(lbl);
    }
    const path = key => days.map((d, i) => (i ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(d[key]).toFixed(1)).join(' ');
    s.append(svg('path', { d: path('cpu_p95_pct'), fill: 'none', stroke: '#1f6feb', 'stroke-width': 2 }));
    s.append(svg('path', { d: path('cpu_mean_pct'), fill: 'none', stroke: '#8b949e', 'stroke-dasharray': '4 3' }));
    for (const i of [0, days.length - 1]) {
      const lbl = svg('text', { x: x(i) - (i ? 50 : 0), y: H - 4 });
      lbl.textContent = days[i].date;
      s.append(lbl);
    }
    box.replaceChildren(s);
  } catch (e) {
    box.replaceChildren(el('div', 'empty', '利用率历史不可用'));
  }
}

async function act(step, btn) {
  const res = document.getElementById('result');
  const body = { reason: document.getElementById('reason').value };
  if (step === 'schedule') {
    const at = document.getElementById('at').value;
    body.at_ms = at ? new Date(at).getTime() : Date.now();
  }
  btn.disabled = true;
  try {
    const r = await fetch('/api/reclaim/cases/' + ID + '/' + step, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const j = await r.json();
    res.textContent = r.ok ? '已完成：' + (STEP[step] || step) : '未完成：' + j.error;
    res.className = r.ok ? 'ok' : 'err';
  } finally {
    poll();
  }
}

async function poll() {
  const conn = document.getElementById('conn');
  try {
    const r = await fetch('/api/reclaim/cases/' + ID);
    if (!r.ok) throw new Error(r.status);
    const b = await r.json();
    facts(b); steps(b); timeline(b); commands(b);
    if (chartFor !== b.case.case.uuid) { chartFor = b.case.case.uuid; chart(chartFor); }
    conn.textContent = '已连接';
    conn.className = 'up';
  } catch (e) {
    conn.textContent = '连接中断';
    conn.className = 'down';
  }
}
poll();
setInterval(poll, POLL_MS);
