'use strict';
// Sign in, then go back to the page that asked for it (only a path on this site).
(function () {
  const form = document.getElementById('login');
  const result = document.getElementById('login-result');
  const submit = document.getElementById('submit');
  function next() {
    const n = new URLSearchParams(location.search).get('next') || '/';
    return n.startsWith('/') && !n.startsWith('//') ? n : '/';
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    result.className = '';
    result.textContent = '正在登录…';
    try {
      const r = await fetch('/api/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          name: document.getElementById('name').value,
          password: document.getElementById('password').value,
        }),
      });
      if (r.ok) {
        const me = await r.json().catch(() => ({}));
        const asked = new URLSearchParams(location.search).get('next');
        // a unit's people start at their own cases
        location.assign(asked ? next() : (me.role === 'unit' ? '/reclaim' : '/'));
        return;
      }
      const body = await r.json().catch(() => ({}));
      result.className = 'err';
      result.textContent = body.error || ('登录失败（HTTP ' + r.status + '）');
    } catch (e) {
      result.className = 'err';
      result.textContent = '无法连接服务器：' + e.message;
    }
    submit.disabled = false;
  });
})();
