'use strict';
// Unit, system and file names come from users: only ever set with textContent.
const POLL_MS = 5000;
const ROLE = { ops: '运维单位', authority: '主管部门', unit: '使用单位' };
const TERMINAL = ['in_service', 'done', 'rejected', 'withdrawn'];

function row(v) {
  const a = v.application;
  const tr = el('tr', v.overdue ? 'overdue' : '');
  const id = el('td');
  const link = el('a', null, '#' + a.id);
  link.href = '/applications/' + a.id;
  id.append(link);
  const sys = el('td');
  sys.append(el('span', null, a.system), el('span', 'muted', a.unit));
  const st = el('td');
  st.append(el('span', 'state ' + a.state, v.state_zh));
  const wait = el('td', null, v.waiting_zh ? '待' + v.waiting_zh + '办理' : '—');
  const dl = el('td', 'deadline', v.deadline ? v.deadline + (v.overdue ? '（逾期 ' + v.overdue_days + ' 个工作日）' : '') : '—');
  const cl = el('td', 'muted', a.deadline_clause || '');
  const ends = el('td', null, a.ends_ms ? new Date(a.ends_ms - 1).toLocaleDateString('zh-CN') : '—');
  tr.append(id, el('td', null, v.kind_zh), sys, st, wait, dl, cl, ends);
  return tr;
}

function table(list) {
  const t = el('table');
  const head = el('tr');
  for (const c of ['申请', '类型', '系统 / 单位', '状态', '等待', '本步截止', '依据', '到期 / 续期']) head.append(el('th', null, c));
  t.append(el('thead'), el('tbody'));
  t.tHead.append(head);
  list.sort((a, b) => (b.overdue - a.overdue) || (a.application.deadline_ms || 9e15) - (b.application.deadline_ms || 9e15));
  t.tBodies[0].append(...list.map(row));
  return t;
}

function section(title, meta, list) {
  const sec = el('section', 'group');
  const h = el('h2', null, title);
  h.append(el('span', 'meta', meta));
  const body = el('div', 'body');
  body.append(list.length ? table(list) : el('div', 'empty', '无'));
  sec.append(h, body);
  return sec;
}

function render(q) {
  document.getElementById('profile').textContent = '资源申请 · 依据《' + q.profile + '》，工作日按 ' + q.calendar.join('、') + ' 计';
  const all = q.applications;
  const open = all.filter(v => !TERMINAL.includes(v.application.state));
  const mine = open.filter(v => v.steps.length > 0);
  document.getElementById('t-mine').textContent = mine.length;
  document.getElementById('t-overdue').textContent = open.filter(v => v.overdue).length;
  document.getElementById('t-open').textContent = open.length;
  document.getElementById('t-done').textContent = all.length - open.length;
  const box = document.getElementById('queues');
  box.replaceChildren(
    section('待我办理', '按截止时间排序，逾期在前', mine),
    section('办理中', '其他各方办理中的申请', open.filter(v => v.steps.length === 0)),
    section('已办结', '正式运行、已办结、未通过、已撤回', all.filter(v => TERMINAL.includes(v.application.state))),
  );
}

async function poll() {
  const conn = document.getElementById('conn');
  try {
    const r = await fetch('/api/applications');
    if (!r.ok) throw new Error(r.status);
    render(await r.json());
    conn.textContent = '已连接';
    conn.className = 'up';
  } catch (e) {
    conn.textContent = '连接中断';
    conn.className = 'down';
  }
}

// the new-application form: a unit's people only
const form = document.getElementById('new-form');
function showFields() {
  const k = document.getElementById('n-kind').value;
  const show = (cls, on) => document.querySelectorAll('.' + cls).forEach(e => { e.hidden = !on; });
  show('k-grant', ['new', 'test', 'temporary'].includes(k));
  show('k-vm', ['change', 'termination', 'extension'].includes(k));
  show('k-change', k === 'change');
  show('k-term', k === 'termination');
  show('k-end', ['test', 'temporary', 'extension'].includes(k));
}
if (MY_ROLE === 'unit') {
  document.getElementById('new').hidden = false;
  document.getElementById('n-kind').addEventListener('change', showFields);
  showFields();
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const res = document.getElementById('n-result');
    const kind = document.getElementById('n-kind').value;
    const system = document.getElementById('n-system').value;
    const purpose = document.getElementById('n-purpose').value;
    const ends = document.getElementById('n-ends').value || null;
    const uuids = document.getElementById('n-uuids').value.split(/[,，\s]+/).filter(Boolean);
    let r;
    const file = document.getElementById('n-file').files[0];
    if (['new', 'test', 'temporary'].includes(kind)) {
      if (!file) { res.textContent = '请选择本地区的申请表文件'; res.className = 'err'; return; }
      const qs = new URLSearchParams({ kind, system, purpose, file: file.name });
      if (ends) qs.set('ends', ends);
      r = await fetch('/api/applications/form?' + qs, { method: 'POST', body: file });
    } else {
      const body = { kind, system, purpose, uuids, ends };
      if (kind === 'change') {
        const n = id => { const v = document.getElementById(id).value; return v ? Number(v) : null; };
        body.changes = uuids.map(uuid => ({ uuid, vcpus: n('n-vcpus'), mem_gb: n('n-mem') }));
        body.uuids = [];
      }
      if (kind === 'termination') body.declaration = document.getElementById('n-decl').value;
      r = await fetch('/api/applications', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
    }
    const j = await r.json();
    if (r.ok) {
      res.textContent = '已提交：申请 #' + j.application.id;
      res.className = 'ok';
      form.reset();
      showFields();
    } else {
      const rows = (j.rows || []).map(e => (e.row ? '第 ' + e.row + ' 行' : '') + (e.column ? '「' + e.column + '」' : '') + '：' + e.reason);
      res.textContent = '未提交：' + j.error + (rows.length ? '；' + rows.join('；') : '');
      res.className = 'err';
    }
    poll();
  });
}
poll();
setInterval(poll, POLL_MS);
