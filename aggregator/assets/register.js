'use strict';
// Everything from the API (unit, system and VM names, reasons) is set with textContent only.
const POLL_MS = 10000;
const STATUS = { matched: '已匹配', unseen: '未上报', no_uuid: '无UUID' };
const TERM = { test: '测试资源', trial: '试运行', temporary: '临时资源' };
const SOURCE = { sanction: '限制期配额', unit: '单位配额', approved_sum: '核准合计' };
// the active profile's clauses, as the page names them
const CLAUSE = document.getElementById('totals').dataset;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function num(v) {
  if (v == null) return '—';
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// "approved / observed" with the observed part marked when it is above.
function pairCell(approved, observed, isOver) {
  const td = el('td', 'num');
  td.append(el('span', null, num(approved)), el('span', 'muted', ' / '));
  td.append(el('span', isOver ? 'over' : null, observed == null ? '—' : num(observed)));
  return td;
}

function overSet(list) { return new Set((list || []).map(e => e.resource)); }

function unitSection(u) {
  const sec = el('section', 'group');
  const h = el('h2', null, u.name);
  if (u.sanction) h.append(el('span', 'badge sanction', u.sanction.hold_requests ? '限制中 · 申请暂停' : '限制中'));
  if (u.over_quota.length) h.append(el('span', 'badge over', '超配额'));
  const q = u.effective_quota;
  h.append(el('span', 'meta',
    '配额（' + (SOURCE[u.quota_source] || u.quota_source) + '）vCPU ' + num(q.vcpus) +
    ' · 内存 ' + num(q.mem_gb) + ' GB · 磁盘 ' + num(q.disk_gb) + ' GB；实际 vCPU ' +
    num(u.observed.vcpus) + ' · 内存 ' + num(u.observed.mem_gb) + ' GB · 磁盘 ' +
    num(u.observed.disk_gb) + ' GB'));
  sec.append(h);
  if (u.sanction) {
    sec.append(el('div', 'note sanction',
      '自 ' + u.sanction.since + ' 起限制：' + u.sanction.reason +
      (u.sanction.hold_requests ? '；暂停该单位新增资源申请（' + CLAUSE.holdClause + '）' : '')));
  }
  const t = el('table');
  const head = el('tr');
  for (const c of ['系统 / 虚拟机', '服务器类型', '网络分区', 'vCPU 核准/实际', '内存GB 核准/实际',
                   '磁盘GB 核准/实际', '匹配', '宿主机 / 节点', '负责人']) head.append(el('th', null, c));
  const thead = el('thead'); thead.append(head); t.append(thead);
  const tbody = el('tbody');
  const systems = new Map();
  for (const v of u.vms) {
    const a = v.allocation;
    const key = (a.system || '') + ' / ' + (a.subsystem || '');
    if (!systems.has(key)) systems.set(key, []);
    systems.get(key).push(v);
  }
  for (const [key, vms] of systems) {
    const tr = el('tr', 'system');
    const td = el('td', null, key.replace(/^ \/ | \/ $/g, ''));
    td.colSpan = 9;
    tr.append(td);
    tbody.append(tr);
    for (const v of vms) {
      const a = v.allocation, over = overSet(v.over);
      const r = el('tr', over.size ? 'vm over' : 'vm');
      const name = el('td', 'name');
      name.append(el('span', 'id', a.uuid || '（未填UUID）'));
      // the allocation's term: test / trial / temporary with its end, and the application
      const term = a.term || {};
      if (term.kind && term.kind !== 'formal') {
        const end = term.ends_ms ? ' · 至 ' + new Date(term.ends_ms - 1).toLocaleDateString('zh-CN') : '';
        name.append(el('span', 'badge term', (TERM[term.kind] || term.kind) + end));
      }
      if (term.application) {
        const link = el('a', 'muted', ' 申请 #' + term.application);
        link.href = '/applications/' + term.application;
        name.append(link);
      }
      r.append(name, el('td', null, a.server_type), el('td', null, a.zone));
      const o = v.observed;
      r.append(pairCell(v.approved.vcpus, o && o.vcpus, over.has('vcpus')));
      r.append(pairCell(v.approved.mem_gb, o && o.mem_gb, over.has('mem_gb')));
      r.append(pairCell(v.approved.disk_gb, o && o.disk_gb, over.has('disk_gb')));
      const st = el('td'); st.append(el('span', 'badge ' + v.status, STATUS[v.status] || v.status));
      r.append(st);
      const where = [];
      if (v.hypervisor) where.push(v.hypervisor.host + ' · ' + v.hypervisor.domain);
      if (v.guest) where.push(v.guest.node);
      r.append(el('td', 'muted', where.join(' / ') || '—'));
      r.append(el('td', null, a.owner || '—'));
      tbody.append(r);
    }
  }
  t.append(tbody);
  sec.append(t);
  return sec;
}

function simpleTable(title, meta, columns, rows) {
  const sec = el('section', 'group');
  const h = el('h2', null, title);
  h.append(el('span', 'meta', meta));
  sec.append(h);
  const t = el('table');
  const head = el('tr');
  for (const c of columns) head.append(el('th', null, c));
  const thead = el('thead'); thead.append(head); t.append(thead);
  const tbody = el('tbody');
  for (const cells of rows) {
    const tr = el('tr');
    for (const c of cells) tr.append(el('td', 'num', c));
    tbody.append(tr);
  }
  t.append(tbody);
  sec.append(t);
  return sec;
}

function render(body) {
  const units = document.getElementById('units');
  units.replaceChildren();
  let vms = 0, over = 0;
  for (const u of body.units) {
    vms += u.vms.length;
    over += u.vms.filter(v => v.over.length).length;
    units.append(unitSection(u));
  }
  if (!body.units.length) units.append(el('div', 'empty', '登记表为空：请导入云资源使用需求表'));
  document.getElementById('t-units').textContent = body.units.length;
  document.getElementById('t-vms').textContent = vms;
  document.getElementById('t-over').textContent = over;
  document.getElementById('t-unit-over').textContent = body.units.filter(u => u.over_quota.length).length;
  document.getElementById('t-unreg').textContent = body.unregistered.length;
  document.getElementById('t-sanction').textContent = body.units.filter(u => u.sanction).length;

  const unreg = document.getElementById('unregistered');
  unreg.replaceChildren();
  if (body.unregistered.length) {
    unreg.append(simpleTable('未登记的虚拟机', '运行中但不在登记表内（' + CLAUSE.unregisteredClause + '）',
      ['UUID', '宿主机 · 域名', '节点', 'vCPU', '内存GB', '磁盘GB'],
      body.unregistered.map(u => [u.uuid,
        u.hypervisor ? u.hypervisor.host + ' · ' + u.hypervisor.domain : '—',
        u.guest ? u.guest.node : '—', num(u.size.vcpus), num(u.size.mem_gb), num(u.size.disk_gb)])));
  }
  const pools = document.getElementById('pools');
  pools.replaceChildren();
  if (body.pools.length) {
    pools.append(simpleTable('资源池', '容量 =（总量 − 预留）× 超分比',
      ['资源池', '主机数', 'vCPU 容量/已分配/使用', '内存GB 容量/已分配/使用', '磁盘GB 容量/已分配/使用'],
      body.pools.map(p => [p.pool.name, p.pool.hosts.length,
        [p.capacity.vcpus, p.allocated.vcpus, p.used.vcpus].map(num).join(' / '),
        [p.capacity.mem_gb, p.allocated.mem_gb, p.used.mem_gb].map(num).join(' / '),
        [p.capacity.disk_gb, p.allocated.disk_gb, p.used.disk_gb].map(num).join(' / ')])));
  }
  document.getElementById('updated').textContent =
    '更新于 ' + new Date(body.now_ms).toLocaleTimeString('zh-CN');
}

async function refresh() {
  try {
    const r = await fetch('/api/register', { cache: 'no-store' });
    if (r.ok) render(await r.json());
  } catch (e) {
    document.getElementById('updated').textContent = '连接失败，稍后重试';
  }
}

function showImport(cls, text, errors) {
  const res = document.getElementById('import-result');
  res.className = cls;
  res.textContent = text;
  const table = document.getElementById('import-errors');
  const tbody = table.querySelector('tbody');
  tbody.replaceChildren();
  for (const e of errors) {
    const tr = el('tr');
    tr.append(el('td', null, e.file), el('td', 'num', e.row == null ? '—' : e.row),
              el('td', null, e.column || '—'), el('td', null, e.reason));
    tbody.append(tr);
  }
  table.hidden = errors.length === 0;
}

const importForm = document.getElementById('import-form');
if (importForm) importForm.addEventListener('submit', async ev => {
  ev.preventDefault();
  const file = document.getElementById('imp-file').files[0];
  if (!file) return;
  const q = new URLSearchParams({
    unit: document.getElementById('imp-unit').value,
    file: file.name,
  });
  const ext = file.name.split('.').pop().toLowerCase();
  if (ext === 'csv' || ext === 'xlsx' || ext === 'xls') q.set('format', ext);
  showImport('', '正在导入…', []);
  try {
    const r = await fetch('/api/register/import?' + q, { method: 'POST', body: file });
    const body = await r.json();
    if (r.ok) {
      showImport('ok', '已导入 ' + body.imported + ' 台虚拟机（' + body.unit + ' 现有 ' + body.unit_vms + ' 台）', []);
      refresh();
    } else {
      showImport('bad', '未导入：' + body.error, body.errors || []);
    }
  } catch (e) {
    showImport('bad', '导入失败：' + e, []);
  }
});

refresh();
setInterval(refresh, POLL_MS);
