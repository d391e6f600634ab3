'use strict';
// Shared by the pages' scripts, loaded before each of them.
// Who is signed in (the header's #who): which actions to offer. The server checks again.
const WHO = document.getElementById('who');
const MY_ROLE = WHO ? WHO.dataset.role : null;
const MY_NAME = WHO ? WHO.dataset.name : null;
const MY_UNIT = WHO ? (WHO.dataset.unit || null) : null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
