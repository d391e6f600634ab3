'use strict';
// Every page: writes carry the session's CSRF token; an ended session leads to the sign-in
// page; the sign-out button ends the session.
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : null;
  const plain = window.fetch.bind(window);
  window.fetch = async function (input, init) {
    init = init || {};
    const method = (init.method || 'GET').toUpperCase();
    if (csrf && method !== 'GET' && method !== 'HEAD') {
      const headers = new Headers(init.headers || {});
      headers.set('X-CSRF-Token', csrf);
      init = Object.assign({}, init, { headers });
    }
    const r = await plain(input, init);
    if (r.status === 401 && location.pathname !== '/login') {
      location.assign('/login?next=' + encodeURIComponent(location.pathname + location.search));
    }
    return r;
  };
  const out = document.getElementById('sign-out');
  if (out) {
    out.addEventListener('click', async () => {
      await window.fetch('/api/session', { method: 'DELETE' });
      location.assign('/login');
    });
  }
})();
