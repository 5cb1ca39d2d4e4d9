// retools dashboard: re-renders the page from /api/page/<name> every few
// seconds. Every value is attacker-controlled text (job names, kwargs,
// errors): nodes are built with textContent and setAttribute only, never
// innerHTML.
'use strict';
(function () {
  const page = document.body.dataset.page;
  const meta = (name) => { const m = document.querySelector('meta[name="' + name + '"]'); return m ? m.content : ''; };
  const csrf = meta('csrf');
  const refreshSeconds = Number(meta('refresh-seconds')) || 5;
  const SVG = 'http://www.w3.org/2000/svg';

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function display(v) {
    if (v === null || v === undefined) return '-';
    return typeof v === 'string' ? v : JSON.stringify(v);
  }
  function hidden(name, value) {
    const i = el('input');
    i.type = 'hidden';
    i.name = name;
    i.value = value;
    return i;
  }
  function actions(list) {
    const frag = document.createDocumentFragment();
    for (const a of list) {
      const f = el('form', 'inline');
      f.method = 'post';
      f.action = a.path;
      if (a.confirm) f.dataset.confirm = a.confirm;
      f.appendChild(hidden('csrf', csrf));
      for (const k of Object.keys(a.fields)) f.appendChild(hidden(k, display(a.fields[k])));
      const b = el('button', a.danger ? 'danger' : '', a.label);
      b.type = 'submit';
      f.appendChild(b);
      frag.appendChild(f);
    }
    return frag;
  }
  function fmtValue(v, format) {
    if (typeof v !== 'number') return '-';
    return format === 'ratio' ? (v * 100).toFixed(1) + '%' : String(v);
  }
  function truncate(s, n) {
    const chars = Array.from(s);
    return chars.length > n ? chars.slice(0, n - 1).join('') + '…' : s;
  }
  function chart(s, out) {
    const legend = el('div', 'legend');
    s.series.forEach((name, i) => {
      legend.appendChild(el('span', 'key s' + i));
      legend.appendChild(document.createTextNode(name + ' '));
    });
    out.appendChild(legend);
    if (!s.items.length) { out.appendChild(el('p', 'empty', 'No data.')); return; }
    let max = s.format === 'ratio' ? 1 : 0;
    for (const it of s.items) for (const v of it.values) if (typeof v === 'number') max = Math.max(max, v);
    if (max <= 0) max = 1;
    const n = s.series.length;
    if (s.orientation === 'columns') {
      const w = 720, h = 160, base = 140, gw = w / s.items.length, bw = gw * 0.8 / n;
      const root = svg('svg', {class: 'chart', viewBox: '0 0 ' + w + ' ' + h, role: 'img'});
      s.items.forEach((it, i) => {
        for (let k = 0; k < n; k++) {
          const v = typeof it.values[k] === 'number' ? it.values[k] : 0, bh = v / max * (base - 10);
          const r = svg('rect', {class: 's' + k, x: (gw * i + gw * 0.1 + bw * k).toFixed(1), y: (base - bh).toFixed(1),
                                 width: bw.toFixed(1), height: bh.toFixed(1)});
          r.appendChild(svg('title', {}, it.title + ' ' + s.series[k] + ': ' + fmtValue(it.values[k], s.format)));
          root.appendChild(r);
        }
        if (i % 3 === 0 || s.items.length <= 12)
          root.appendChild(svg('text', {x: (gw * i + gw / 2).toFixed(1), y: h - 4, class: 'axis'}, it.label));
      });
      root.appendChild(svg('text', {x: 0, y: 10, class: 'axis max'}, fmtValue(max, s.format)));
      out.appendChild(root);
      return;
    }
    const w = 720, row = 14 * n + 8, label = 260, bar = w - label - 70;
    const root = svg('svg', {class: 'chart', viewBox: '0 0 ' + w + ' ' + row * s.items.length, role: 'img'});
    s.items.forEach((it, i) => {
      const y = row * i;
      root.appendChild(svg('text', {x: 0, y: (y + row / 2 + 3).toFixed(1), class: 'label'}, truncate(it.label, 40)));
      for (let k = 0; k < n; k++) {
        const v = typeof it.values[k] === 'number' ? it.values[k] : 0, by = y + 4 + 14 * k;
        const r = svg('rect', {class: 's' + k, x: label, y: by.toFixed(1), width: (v / max * bar).toFixed(1), height: 12});
        r.appendChild(svg('title', {}, it.label + ' ' + s.series[k] + ': ' + fmtValue(it.values[k], s.format)));
        root.appendChild(r);
        root.appendChild(svg('text', {x: (label + v / max * bar + 4).toFixed(1), y: (by + 10).toFixed(1), class: 'value'},
                             fmtValue(it.values[k], s.format)));
      }
    });
    out.appendChild(root);
  }
  function cell(c) {
    const td = el('td');
    if (c !== null && typeof c === 'object' && 'code' in c) td.appendChild(el('pre', '', c.code));
    else if (c !== null && typeof c === 'object' && 'actions' in c) td.appendChild(actions(c.actions));
    else td.textContent = display(c);
    return td;
  }
  function section(s) {
    const out = el('section', 'sec-' + s.type + (s.format ? ' fmt-' + s.format : ''));
    if (s.title) out.appendChild(el('h2', '', s.title));
    if (s.type === 'cards') {
      const cards = el('div', 'cards');
      for (const it of s.items) {
        const card = el('div', 'card');
        card.appendChild(el('div', 'value', display(it.value)));
        card.appendChild(el('div', 'label', display(it.label)));
        cards.appendChild(card);
      }
      out.appendChild(cards);
    } else if (s.type === 'chart') {
      chart(s, out);
    } else if (s.type === 'actions') {
      out.appendChild(actions(s.actions));
    } else if (s.type === 'table') {
      if (!s.rows.length) { out.appendChild(el('p', 'empty', s.empty)); return out; }
      const t = el('table'), head = el('thead'), hr = el('tr'), body = el('tbody');
      for (const c of s.columns) hr.appendChild(el('th', '', c));
      head.appendChild(hr);
      for (const r of s.rows) {
        const tr = el('tr');
        for (const c of r) tr.appendChild(cell(c));
        body.appendChild(tr);
      }
      t.appendChild(head);
      t.appendChild(body);
      out.appendChild(t);
    }
    return out;
  }
  function render(model) {
    const nodes = [el('h1', '', model.title)];
    for (const s of model.sections) nodes.push(section(s));
    document.getElementById('main').replaceChildren(...nodes);
    const updated = document.getElementById('updated');
    if (updated) updated.textContent = model.updated;
    document.body.classList.remove('stale');
    document.body.dataset.live = '1';  // rendered by this script (tests look for it)
  }
  async function refresh() {
    if (document.hidden) return;
    try {
      const r = await fetch('/api/page/' + page, {credentials: 'same-origin', cache: 'no-store'});
      if (!r.ok) throw new Error('HTTP ' + r.status);
      render(await r.json());
    } catch (e) {
      document.body.classList.add('stale');
    }
  }
  document.addEventListener('submit', (e) => {
    const c = e.target.dataset ? e.target.dataset.confirm : '';
    if (c && !window.confirm(c)) e.preventDefault();
  });
  if (page && page !== 'login') {
    refresh();
    setInterval(refresh, refreshSeconds * 1000);
  }
})();
