'use strict';
// Unit, system and VM names come from the register and users: only ever set with textContent.
const POLL_MS = 5000;
const STATE = {
  detected: '已发现', notified: '已通知使用单位', agreed: '单位同意', disputed: '单位有异议',
  filed: '已报主管部门', approved: '已批准', scheduled: '已排期', executing: '执行中（待主机确认）',
  execution_failed: '执行失败/超时', executed: '已执行', verified: '已核实', releasing: '释放中',
  closed: '已关闭', withdrawn: '已撤销', rejected: '已驳回', rolling_back: '回退中', rolled_back: '已回退',
};
const TERMINAL = ['closed', 'withdrawn', 'rejected', 'rolled_back'];

function kindText(k) {
  if (k.kind === 'idle') return '闲置 → 停机回收';
  const r = k.recommended;
  return '配置过度 → 降配至 ' + r.vcpus + ' 核 / ' + Math.round(r.mem_kib / 1048576) + ' GiB';
}

function row(v) {
  const c = v.case;
  const tr = el('tr', v.overdue ? 'overdue' : '');
  const id = el('td');
  const a = el('a', null, '#' + c.id);
  a.href = '/reclaim/' + c.id;
  id.append(a);
  const vm = el('td');
  vm.append(el('span', null, c.vm_name), el('span', 'muted', c.uuid));
  const st = el('td');
  st.append(el('span', 'state ' + c.state, STATE[c.state] || c.state));
  if (c.note) st.append(el('span', 'muted', c.note));
  const dl = el('td', 'deadline', v.deadline ? v.deadline + (v.overdue ? '（逾期 ' + v.overdue_days + ' 个工作日）' : '') : '—');
  const cmd = el('td');
  if (v.command) cmd.append(el('span', null, v.command.action && Object.keys(v.command.action)[0] || ''), el('span', 'muted', v.command.status + ' · ' + v.command.node + ' · 发送 ' + v.command.sends + ' 次'));
  else cmd.textContent = '—';
  tr.append(id, vm, el('td', null, kindText(c.kind)), st, dl, cmd);
  return tr;
}

function render(q) {
  const open = q.cases.filter(v => !TERMINAL.includes(v.case.state));
  document.getElementById('t-open').textContent = open.length;
  document.getElementById('t-overdue').textContent = open.filter(v => v.overdue).length;
  document.getElementById('t-pending').textContent = open.filter(v => ['executing', 'execution_failed', 'releasing', 'rolling_back'].includes(v.case.state)).length;
  document.getElementById('t-done').textContent = q.cases.length - open.length;
  const byUnit = new Map();
  for (const v of q.cases) {
    if (!byUnit.has(v.case.unit)) byUnit.set(v.case.unit, []);
    byUnit.get(v.case.unit).push(v);
  }
  const box = document.getElementById('units');
  box.replaceChildren();
  if (!byUnit.size) box.append(el('div', 'empty', '暂无工单'));
  for (const [unit, list] of [...byUnit].sort((a, b) => b[1].filter(v => v.overdue).length - a[1].filter(v => v.overdue).length)) {
    const sec = el('section', 'group');
    const h = el('h2', null, unit);
    h.append(el('span', 'meta', list.length + ' 个工单'));
    if (q.held_units[unit]) h.append(el('span', 'held', '新增资源申请已暂停（' + document.getElementById('totals').dataset.holdClause + '）'));
    const t = el('table');
    const head = el('tr');
    for (const c of ['工单', '虚拟机', '类型', '状态', '当前步骤截止（工作日）', '指令']) head.append(el('th', null, c));
    t.append(el('thead'), el('tbody'));
    t.tHead.append(head);
    list.sort((a, b) => (b.overdue - a.overdue) || (a.case.deadline_ms || 9e15) - (b.case.deadline_ms || 9e15));
    t.tBodies[0].append(...list.map(row));
    const body = el('div', 'body');
    body.append(t);
    sec.append(h, body);
    box.append(sec);
  }
}

async function poll() {
  const conn = document.getElementById('conn');
  try {
    const r = await fetch('/api/reclaim/cases');
    if (!r.ok) throw new Error(r.status);
    render(await r.json());
    conn.textContent = '已连接';
    conn.className = 'up';
  } catch (e) {
    conn.textContent = '连接中断';
    conn.className = 'down';
  }
}
poll();
setInterval(poll, POLL_MS);
