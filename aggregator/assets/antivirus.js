'use strict';
// Node ids, host names, units, product names and reasons come from agents and users: they are
// only ever set with textContent.
const POLL_MS = 5000;
const LIVENESS = { online: '在线', silent: '静默', offline: '离线' };
const GONE = { package: '软件包', path: '安装文件', unit: '服务单元', process: '进程' };
const PKG_STATE = { Installed: '', Changing: '（安装/升级中）' };

let latest = null;

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString('zh-CN', { hour12: false }) : '—';
}

function fmtDate(s) {
  return s ? new Date(s * 1000).toLocaleDateString('zh-CN') : '未知';
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

function lines(td, texts, cls) {
  for (const t of texts) td.append(el('span', cls ? 'line ' + cls : 'line', t));
  return td;
}

function stateCell(v) {
  const td = el('td');
  td.append(el('span', 'state ' + v.state, v.state_zh));
  return td;
}

function packageText(p) {
  if (p.package) return p.package.name + ' ' + p.package.version + (PKG_STATE[p.package.state] || '');
  if (p.paths.length) return p.paths.join('、');
  return '—';
}

function productText(p) {
  const parts = [p.profile, packageText(p)];
  parts.push(p.processes.length ? '运行中（' + p.processes.join('、') + '）' : '未运行');
  if (p.unit) parts.push(p.unit.name + (p.unit.enabled ? ' 开机启动' : ' 未设开机启动'));
  parts.push('病毒库 ' + fmtDate(p.signatures_s));
  return parts.join(' · ');
}

const CMD_STATUS = { outstanding: '已下发，待主机回执', succeeded: '已执行', failed: '执行失败', expired: '超时未回执（结果未知）' };

function commandText(cmds) {
  if (!cmds || !cmds.length) return '（停机指令未下发，见审计日志）';
  const c = cmds[0];
  return '（停机指令 ' + c.id.slice(0, 8) + '… 发往 ' + c.node + '：' + (CMD_STATUS[c.status] || c.status) + (c.message ? '，' + c.message : '') + '）';
}

function decisionText(d, cmds) {
  if (!d) return '未申请';
  const asked = d.requested_by + ' 于 ' + fmtTime(d.requested_ms) + ' 申请：' + d.reason;
  if (d.approved_ms) {
    return asked + '；' + (d.approval_required ? d.approved_by + ' 于 ' + fmtTime(d.approved_ms) + ' 批准'
      : '按策略无需审批') + commandText(cmds);
  }
  return asked + '；待主管部门审批';
}

function actionButton(text, cls, onClick) {
  const b = el('button', 'act ' + cls, text);
  b.type = 'button';
  b.addEventListener('click', () => onClick(b));
  return b;
}

function removedRow(v) {
  const tr = el('tr', v.liveness);
  tr.dataset.node = v.node;
  const vm = el('td', 'name');
  vm.append(el('span', 'id', v.node));
  lines(vm, [(v.hostname || '—') + ' · ' + (LIVENESS[v.liveness] || v.liveness)], 'muted');
  const what = el('td', 'wrap');
  const when = el('td', 'wrap');
  const gone = el('td', 'wrap');
  for (const r of v.removals) {
    what.append(el('span', 'line', r.profile + '：' + packageText(r.was)));
    lines(when, [
      '最后检测到安装：' + fmtTime(r.last_present_ms),
      '首次未检测到：' + fmtTime(r.gone_since_ms),
      '确认卸载：' + fmtTime(r.confirmed_ms),
    ]);
    const box = el('span', 'line');
    for (const g of r.gone) box.append(el('span', 'gone', (GONE[g.kind] || g.kind) + ' ' + g.name));
    if (!r.gone.length) box.textContent = '—';
    gone.append(box);
  }
  const decision = el('td', 'wrap', decisionText(v.stop, v.stop_commands));
  const action = el('td');
  if (v.stop_offered && MY_ROLE === 'ops') {
    action.append(actionButton('申请停止虚拟机', 'stop', b => post(v.node, 'stop-request', b)));
  } else if (v.stop && !v.stop.approved_ms && MY_ROLE === 'authority' && v.stop.requested_by !== MY_NAME) {
    action.append(actionButton('批准停机', '', b => post(v.node, 'stop-request/approve', b)));
  }
  tr.append(
    vm,
    el('td', null, (v.unit || '未登记') + (v.system ? ' / ' + v.system : '')),
    what,
    when,
    gone,
    decision,
    action,
  );
  return tr;
}

function otherRow(v) {
  const tr = el('tr', v.liveness);
  tr.dataset.node = v.node;
  const vm = el('td', 'name');
  vm.append(el('span', 'id', v.node));
  const installed = v.products.filter(p => p.package || p.paths.length);
  tr.append(
    stateCell(v),
    vm,
    el('td', 'hostname', v.hostname || '—'),
    el('td', null, v.unit || '未登记'),
    lines(el('td', 'wrap'), installed.length ? installed.map(productText) : ['—']),
    lines(el('td', 'wrap'), v.notes.length ? v.notes : ['—']),
    el('td', 'num', fmtTime(v.report_ts_ms)),
  );
  return tr;
}

function matches(v, q) {
  return !q || [v.node, v.hostname, v.unit, v.system].some(s => s && s.toLowerCase().includes(q));
}

function fill(id, content) {
  document.querySelector('#' + id + ' .body').replaceChildren(content);
}

function render() {
  if (!latest) return;
  for (const k of ['removed', 'degraded', 'missing', 'unknown', 'compliant']) {
    document.getElementById('t-' + k).textContent = latest.totals[k];
  }
  document.getElementById('policy').textContent = '病毒库有效期 ' + latest.signature_max_age_days + ' 天 · 停止虚拟机'
    + (latest.stop_requires_approval ? '须经主管部门审批' : '无需审批');
  const q = document.getElementById('filter').value.trim().toLowerCase();
  const shown = latest.vms.filter(v => matches(v, q));
  const removed = shown.filter(v => v.state === 'removed');
  const others = shown.filter(v => v.state !== 'removed');
  fill('removed', removed.length
    ? table(['虚拟机', '使用单位 / 系统', '被卸载的软件', '时间', '消失项（证据）', '停机决定', '操作'], removed.map(removedRow))
    : el('div', 'empty', '没有已卸载杀毒软件的虚拟机'));
  document.getElementById('others-meta').textContent = others.length + ' 台，异常与未安装在前';
  fill('others', others.length
    ? table(['状态', '虚拟机', '主机名', '使用单位', '杀毒软件', '说明', '最后检测'], others.map(otherRow))
    : el('div', 'empty', latest.vms.length ? '没有符合筛选条件的虚拟机' : '暂无虚拟机上报'));
}

function result(ok, text) {
  const r = document.getElementById('result');
  r.className = ok ? 'ok' : 'err';
  r.textContent = text;
}

async function post(node, action, button) {
  const approve = action.endsWith('approve');
  const body = approve ? {} : { reason: document.getElementById('reason').value.trim() };
  button.disabled = true;
  try {
    const r = await fetch('/api/antivirus/' + encodeURIComponent(node) + '/' + action, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => ({}));
    if (r.ok) {
      result(true, node + '：' + (approve ? '已批准停机' : '已提交停机申请') + '（已记入审计日志）');
    } else {
      result(false, node + '：操作失败：' + (answer.error || 'HTTP ' + r.status));
    }
  } catch (e) {
    result(false, node + '：操作失败：无法连接服务器');
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
    const r = await fetch('/api/antivirus', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    latest = await r.json();
    render();
    setConn(true);
  } catch (e) {
    setConn(false);
  }
}

document.getElementById('filter').addEventListener('input', render);
poll();
setInterval(poll, POLL_MS);
