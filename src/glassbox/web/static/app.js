/* glassbox: the page of `glassbox serve` and of `glassbox report` (the same code, inlined there).
   Hand-written, no library. Data come from the JSON API (mode "api") or from the deflated JSON the
   report embeds (mode "report"). Text from models and files is only ever set with textContent.
   Big grids (atlas, attention patterns, byte maps) are canvases with one colour lookup table. */
(function () {
  'use strict';
  const CONF = JSON.parse(document.getElementById('glassbox-config').textContent);
  const REPORT = CONF.mode === 'report';
  const DEFAULT_TEXT = CONF.sample_text ||
    'When Mary and John went to the store, John gave a drink to Mary. When Mary and John went to the store, John gave a drink to Mary.';
  let PAYLOAD = null; // report data
  const S = { src: null, view: null, tensor: null, head: null, role: null, text: DEFAULT_TEXT };
  const cache = { anatomy: {}, atlas: {}, ov: {}, timeline: {}, tour: {}, facts: {} };
  window.glassbox = { state: S, cache: cache, last: {} }; // read by the browser tests

  // ---------- small DOM helpers (textContent only) ----------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x)) ? '–' : (typeof x === 'number' ? (Math.abs(x) >= 1e4 ? x.toLocaleString('en') : (+x.toFixed(d)).toString()) : String(x));
  const signed = (x, d = 3) => (x === null || x === undefined) ? '–' : (x >= 0 ? '+' : '') + (+x.toFixed(d));
  const bytes = (n) => n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MiB' : n >= 1024 ? (n / 1024).toFixed(1) + ' KiB' : n + ' B';
  const visible = (t) => t.replace(/ /g, '␣').replace(/\n/g, '↵').replace(/\t/g, '⇥');
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // ---------- colour: viridis LUT (sequential), PuOr-like diverging ----------
  const VIRIDIS = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];
  function lut(stops) {
    const rgb = stops.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
    const out = new Uint8Array(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = i / 255 * (rgb.length - 1), j = Math.min(Math.floor(x), rgb.length - 2), f = x - j;
      for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(rgb[j][c] * (1 - f) + rgb[j + 1][c] * f);
    }
    return out;
  }
  const SEQ = lut(VIRIDIS);
  const DIV = lut(['#2d004b', '#8073ac', '#d8daeb', '#f7f7f7', '#fee0b6', '#e08214', '#7f3b08']);
  function colour(v, table = SEQ) {
    const i = Math.max(0, Math.min(255, Math.round(v * 255)));
    return `rgb(${table[i * 3]},${table[i * 3 + 1]},${table[i * 3 + 2]})`;
  }
  const LEVEL_COLOURS = { // Okabe-Ito
    'embedding': '#E69F00', 'position_embedding': '#F0E442', 'attention.q': '#0072B2', 'attention.k': '#56B4E9',
    'attention.v': '#009E73', 'attention.o': '#CC79A7', 'attention.qkv': '#0072B2', 'attention.qk_norm': '#999999',
    'attention.norm': '#bbbbbb', 'mlp.in': '#D55E00', 'mlp.gate': '#e8a27a', 'mlp.out': '#8c3b00', 'mlp.norm': '#bbbbbb',
    'final_norm': '#bbbbbb', 'unembedding': '#E69F00', 'buffer': '#eeeeee', 'unknown': '#dddddd',
  };
  const KIND_COLOURS = { q: '#0072B2', k: '#56B4E9', v: '#009E73', o: '#CC79A7' };

  // ---------- data access: API or embedded report ----------
  async function api(path, opts) {
    const r = await fetch(path, opts);
    const body = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok && r.status !== 202) throw new Error(body.error || r.statusText);
    return { status: r.status, body };
  }
  async function waitJob(job) {
    while (job && (job.state === 'queued' || job.state === 'running')) {
      const tot = job.total ? ` ${job.done}/${job.total}` : '';
      status(`${job.title}: ${job.step || job.state}${tot} (${job.elapsed_s}s)`, job.total ? job.done / job.total : null);
      await sleep(400);
      job = (await api('/api/jobs/' + job.id)).body;
    }
    status('');
    if (job && job.state === 'error') throw new Error(job.error);
  }
  const enc = encodeURIComponent;
  const Data = {
    src(src) { return PAYLOAD.sources.find((s) => s.src === src); },
    async sources() {
      if (REPORT) return { sources: PAYLOAD.sources.map((s) => ({ src: s.src, kind: s.kind })), bundled: [] };
      return (await api('/api/sources')).body;
    },
    async anatomy(src) {
      if (!cache.anatomy[src]) cache.anatomy[src] = REPORT ? this.src(src).anatomy : (await api('/api/anatomy?src=' + enc(src))).body;
      return cache.anatomy[src];
    },
    async atlas(src, compute) {
      if (cache.atlas[src]) return cache.atlas[src];
      if (REPORT) return (cache.atlas[src] = this.src(src).atlas || null);
      let r = (await api('/api/atlas?src=' + enc(src))).body;
      if (!r.atlas && (r.job || compute)) {
        const job = r.job || (await api('/api/atlas?src=' + enc(src), { method: 'POST' })).body.job;
        await waitJob(job);
        r = (await api('/api/atlas?src=' + enc(src))).body;
      }
      return (cache.atlas[src] = r.atlas || null);
    },
    async tour(src) {
      if (!(src in cache.tour)) cache.tour[src] = REPORT ? (PAYLOAD.tour && PAYLOAD.sources[0].src === src ? PAYLOAD.tour : null)
        : (await api('/api/tour?src=' + enc(src))).body.tour;
      return cache.tour[src];
    },
    async facts(src) {
      if (!(src in cache.facts)) cache.facts[src] = REPORT ? (PAYLOAD.facts && PAYLOAD.sources[0].src === src ? PAYLOAD.facts : null)
        : (await api('/api/facts?src=' + enc(src))).body.facts;
      return cache.facts[src];
    },
    async pattern(src, layer, head, text) {
      if (REPORT) {
        const s = this.src(src).sample;
        if (!s || !s.patterns[layer + '.' + head]) return null;
        const T = s.tokens.length, raw = atob(s.patterns[layer + '.' + head]);
        const pat = new Float32Array(T * T);
        for (let i = 0; i < T * T; i++) pat[i] = raw.charCodeAt(i) / 255;
        return { tokens: s.tokens, shape: [T, T], pattern: pat, lens: (s.lens || {})[layer + '.' + head] || [],
          kv_group: s.kv_groups[head], heads_in_group: s.kv_groups.map((g, i) => g === s.kv_groups[head] ? i : -1).filter((i) => i >= 0),
          quantized: true, text: s.text, causal: s.causal };
      }
      const body = JSON.stringify({ src, layer, head, text });
      for (;;) {
        const r = await api('/api/pattern', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        if (r.status === 202) { await waitJob(r.body.job); continue; }
        const raw = atob(r.body.pattern_f32), buf = new Uint8Array(raw.length);
        for (let i = 0; i < raw.length; i++) buf[i] = raw.charCodeAt(i);
        r.body.pattern = new Float32Array(buf.buffer);
        return r.body;
      }
    },
    async ov(src, layer, head) {
      const key = src + '|' + layer + '.' + head;
      if (key in cache.ov) return cache.ov[key];
      if (REPORT) return (cache.ov[key] = (this.src(src).ov || {})[layer + '.' + head] || null);
      for (;;) {
        const r = await api(`/api/ov?src=${enc(src)}&layer=${layer}&head=${head}`);
        if (r.status === 202) { await waitJob(r.body.job); continue; }
        return (cache.ov[key] = r.body);
      }
    },
    async post(path, body) { // a model-backed POST: 202 means the model is loading; wait and ask again
      for (;;) {
        const r = await api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        if (r.status === 202) { await waitJob(r.body.job); continue; }
        return r.body;
      }
    },
    async lens(src, text) {
      if (REPORT) return this.src(src).lens || null;
      return this.post('/api/lens', { src, text });
    },
    async patch(src, clean, corrupt, metric, over) {
      if (REPORT) return this.src(src).patch || null;
      return this.post('/api/patch', { src, clean, corrupt, metric, over });
    },
    async timeline(src) {
      if (cache.timeline[src]) return cache.timeline[src];
      if (REPORT) return (cache.timeline[src] = this.src(src).timeline || null);
      for (;;) {
        const r = await api('/api/timeline?src=' + enc(src));
        if (r.status === 202) { await waitJob(r.body.job); continue; }
        return (cache.timeline[src] = r.body.timeline);
      }
    },
  };

  // ---------- state in the URL hash ----------
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    for (const k of ['src', 'view', 'tensor', 'head', 'role']) if (p.get(k)) S[k] = p.get(k);
  }
  function writeHash() {
    const p = new URLSearchParams();
    for (const k of ['src', 'view', 'tensor', 'head', 'role']) if (S[k]) p.set(k, S[k]);
    history.replaceState(null, '', '#' + p.toString());
  }
  const headOf = () => S.head ? S.head.split('.').map(Number) : null;

  // ---------- frame ----------
  const root = document.getElementById('app');
  let statusEl, mainEl, tabsEl, srcSel, tipEl, barEl;
  function status(text, frac) {
    statusEl.textContent = text;
    barEl.style.width = frac === null || frac === undefined ? (text ? '100%' : '0') : (100 * frac).toFixed(0) + '%';
    barEl.className = frac === null || frac === undefined ? 'bar indeterminate' : 'bar';
  }
  function tip(ev, lines) {
    if (!lines) { tipEl.style.display = 'none'; return; }
    tipEl.replaceChildren(...lines.map((l) => h('div', {}, l)));
    tipEl.style.display = 'block';
    const x = Math.min(ev.clientX + 14, window.innerWidth - tipEl.offsetWidth - 8);
    tipEl.style.left = x + 'px'; tipEl.style.top = (ev.clientY + 14) + 'px';
  }
  function fail(err) { status(''); mainEl.replaceChildren(h('div', { class: 'error', role: 'alert' }, 'error: ' + err.message)); }

  const VIEWS = { tour: 'Start here', map: 'File map', atlas: 'Atlas', head: 'Head', lens: 'Lens & patching', facts: 'Facts', timeline: 'Timeline', overlay: 'Overlay' };
  async function boot() {
    if (REPORT) {
      const raw = atob(document.getElementById('glassbox-data').textContent.trim());
      const buf = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) buf[i] = raw.charCodeAt(i);
      const stream = new Blob([buf]).stream().pipeThrough(new DecompressionStream('deflate'));
      PAYLOAD = JSON.parse(await new Response(stream).text());
    }
    srcSel = h('select', { id: 'src', 'aria-label': 'model or run', onchange: () => { S.src = srcSel.value; S.tensor = null; S.head = null; render(); } });
    tabsEl = h('nav', { class: 'tabs', role: 'tablist' });
    statusEl = h('span', { class: 'status', role: 'status' });
    barEl = h('div', { class: 'bar' });
    tipEl = h('div', { class: 'tip', role: 'tooltip' });
    mainEl = h('main', { id: 'main' });
    const head = h('header', {}, h('b', { class: 'logo' }, 'glassbox'), srcSel, tabsEl,
      REPORT ? h('span', { class: 'badge' }, 'offline report') : h('a', { href: '/api/openapi.json', class: 'api' }, 'API schema'),
      h('div', { class: 'progress' }, barEl), statusEl);
    root.replaceChildren(head, mainEl, tipEl);
    readHash();
    try {
      const srcs = await Data.sources();
      const names = srcs.sources.filter((s) => s.kind !== 'missing').map((s) => s.src);
      for (const b of srcs.bundled || []) if (!names.includes(b)) names.push(b);
      window.glassbox.sources = srcs;
      for (const n of names) {
        const kind = (srcs.sources.find((s) => s.src === n) || { kind: 'model' }).kind;
        srcSel.appendChild(h('option', { value: n, title: n }, label(n) + (kind === 'run' ? ' (run)' : kind === 'index' ? ' (overlay index)' : '')));
      }
      if (!S.src || !names.includes(S.src)) S.src = names[0];
      srcSel.value = S.src;
    } catch (e) { fail(e); return; }
    window.addEventListener('hashchange', () => { readHash(); render(); });
    render();
  }

  function label(src) { return src.replace(/\/+$/, '').split('/').pop(); }
  function kindOf(src) {
    const s = (window.glassbox.sources.sources || []).find((x) => x.src === src);
    return s ? s.kind : 'model';
  }

  let renderSeq = 0;
  async function render() {
    const seq = ++renderSeq;
    const kind = kindOf(S.src);
    const views = kind === 'run' ? ['map', 'timeline'] : kind === 'index' ? ['overlay'] : ['tour', 'map', 'atlas', 'head', 'lens', 'facts'];
    if (!views.includes(S.view)) S.view = views[0];
    tabsEl.replaceChildren(...views.map((v) => h('button', { role: 'tab', 'aria-selected': S.view === v ? 'true' : 'false', 'data-view': v,
      class: S.view === v ? 'on' : '', onclick: () => { S.view = v; render(); } }, VIEWS[v])));
    writeHash();
    mainEl.replaceChildren(h('p', { class: 'muted' }, 'loading…'));
    try {
      const t0 = performance.now();
      const el = await ({ tour: viewTour, map: viewMap, atlas: viewAtlas, head: viewHead, lens: viewLens, facts: viewFacts, timeline: viewTimeline, overlay: viewOverlay })[S.view]();
      if (seq !== renderSeq) return;
      mainEl.replaceChildren(el);
      window.glassbox.last.render_ms = performance.now() - t0;
      document.body.dataset.ready = S.view;
    } catch (e) { if (seq === renderSeq) fail(e); }
  }

  // ---------- Start here: the tour ----------
  const num = (v, d = 4) => (v === null || v === undefined) ? '–' : (typeof v === 'number' ? (Math.abs(v) >= 1e4 ? v.toLocaleString('en') : +v.toFixed(d)) : String(v));
  function commands(ch) { return h('pre', { class: 'cmds' }, ch.commands.map((c) => '$ ' + c).join('\n')); }
  function tourBytes(ch, doc) {
    const [L, H] = doc.head;
    // two tables: the path from config to bytes, then the bytes decoded (one row per q, k, v, o in each)
    const path = ch.steps.map((s) => h('tr', { 'data-kind': s.kind },
      h('td', {}, s.kind),
      h('td', {}, Object.entries(s.config).map(([k, v]) => `${k}=${v}`).join(', ')),
      h('td', {}, s.module),
      h('td', {}, h('code', { class: 'src' }, s.code.source), h('div', { class: 'muted small' }, `${s.code.file.split('/').slice(-3).join('/')}:${s.code.line}`)),
      h('td', {}, s.formula),
      h('td', {}, h('button', { class: 'link tour-tensor', 'data-tensor': s.tensor, onclick: () => { S.view = 'map'; S.tensor = s.tensor; S.head = L + '.' + H; render(); } }, s.tensor + s.slice),
        h('div', { class: 'muted small' }, `bytes ${num(s.bytes.offset)} + ${num(s.bytes.length)}` + (s.bytes.stride ? ` × ${s.bytes.count} every ${num(s.bytes.stride)}` : '')))));
    const decoded = ch.steps.map((s) => h('tr', { 'data-kind': s.kind },
      h('td', {}, s.kind),
      h('td', { class: 'num' }, `${s.block.format} @ ${num(s.block.offset)}`),
      h('td', {}, h('code', { class: 'hex' }, s.block.hex.length > 120 ? s.block.hex.slice(0, 120) + ' …' : s.block.hex)),
      h('td', { class: 'small' }, ['scale', 'min'].filter((k) => k in s.block.fields).map((k) => `${k} ${num(s.block.fields[k], 6)}`).join(', ') + (s.block.fields.codes ? ` · codes ${s.block.fields.codes.slice(0, 8).join(' ')} …` : ''),
        h('div', { class: 'muted' }, s.block.fields.rule || '')),
      h('td', { class: 'num tour-values' }, s.block.values.slice(0, 4).map((v) => num(v, 5)).join(' ')),
      h('td', { class: 'num' }, h('div', { class: 'muted small' }, `[${s.model_values.row}, ${s.model_values.col}:]`), s.model_values.values.slice(0, 4).map((v) => num(v, 5)).join(' '))));
    const th = (cols) => h('tr', {}, cols.map((c) => h('th', {}, c)));
    const perm = ch.steps.find((s) => s.row_map);
    return [h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'tour-path' }, th(['', 'config', 'module', 'the line that reads it', 'formula', 'tensor[slice] → bytes']), path)),
      h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'tour-steps' }, th(['', 'first stored block', 'bytes (hex)', 'fields', 'decoded', 'in the model']), decoded)),
      perm ? h('p', { class: 'small' }, `Q/K rows in this file: stored rows ${perm.row_map.stored_rows.join(', ')} are HF rows ${perm.row_map.hf_rows.join(', ')} — ${perm.row_map.why}.`) : ''];
  }
  function tourTraining(ch) {
    const pc = ch.phase_change, ex = ch.examples;
    const out = [h('table', { class: 'kv', id: 'tour-training' },
      [['declaration', Object.entries(ch.declaration).map(([k, v]) => `${k}=${v}`).join(', ')], ['init', `${ch.init}: ${ch.init_rule}`],
        [`step ${ch.step0.step} W_q of ${pc.layer}.${pc.head}`, ch.step0.values.slice(0, 6).map((v) => num(v, 3)).join(' ') + ` … (std ${num(ch.step0.std, 3)})`],
        ['first step: share of the update', Object.entries(ch.first_step_shares).slice(0, 5).map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(', ')],
        ['phase change', pc.step === null ? 'none detected' : `head ${pc.layer}.${pc.head} at step ${pc.step}, induction score ${num(pc.before, 2)} → ${num(pc.after, 2)}`],
        ['loss on the repeated half', ch.loss_change ? `${num(ch.loss_change.before, 2)} → ${num(ch.loss_change.after, 2)} nats at step ${ch.loss_change.step}` : '–'],
        ['K-composition sender', ch.sender ? `${ch.sender.from.join('.')}: ${num(ch.sender.first, 2)} → ${num(ch.sender.last, 2)}` : '–'],
      ].map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, String(v)))))];
    if (ex && ex.top.length) out.push(h('table', { class: 'grid' }, h('tr', {}, ['step', 'row', 'contribution', 'text'].map((c) => h('th', {}, c))),
      ex.top.map((r) => h('tr', {}, h('td', { class: 'num' }, r.step), h('td', { class: 'num' }, r.row), h('td', { class: 'num' }, num(r.contribution, 5)), h('td', {}, r.text)))));
    return out;
  }
  function tourSpecial(ch) {
    const tops = h('ul', { id: 'tour-top' }, Object.entries(ch.top_heads).map(([r, v]) => h('li', {}, h('b', {}, r + ': '), v.map((x) => x.text).join(', '))));
    const ev = ch.evidence.length ? h('table', { class: 'grid' }, h('tr', {}, ['role', 'score', 'validated', 'evidence', 'effect', 'interval', 'null', 'p'].map((c) => h('th', {}, c))),
      ch.evidence.map((r) => h('tr', {}, h('td', {}, r.role), h('td', { class: 'num' }, num(r.score, 2)), h('td', {}, r.validated ? '✓' : '✗'), h('td', {}, r.basis || '–'),
        h('td', { class: 'num' }, num(r.effect, 4)), h('td', { class: 'num' }, r.ci ? `[${num(r.ci[0], 4)}, ${num(r.ci[1], 4)}]` : '–'),
        h('td', { class: 'num' }, r.null_mean === null || r.null_mean === undefined ? '–' : `${num(r.null_mean, 4)} ± ${num(r.null_sd, 3)}`), h('td', { class: 'num' }, num(r.p, 3))))) : '';
    const lab = ch.label;
    return [tops, ev, h('p', { class: 'small', id: 'tour-label' }, `label: ${lab.path} · tensor bytes unchanged: ${lab.bytes_unchanged ? 'yes' : 'NO'} (SHA-256 ${lab.tensors_sha256_after.slice(0, 16)}…)`)];
  }
  async function viewTour() {
    const doc = await Data.tour(S.src);
    const wrap = h('section', { class: 'tour' });
    if (!doc) {
      wrap.appendChild(h('p', {}, `No tour of ${label(S.src)} yet. Make one with: glassbox tour ${S.src}`));
      return wrap;
    }
    window.glassbox.tour = doc;
    wrap.appendChild(h('h2', {}, `${doc.model}, head ${doc.head.join('.')}: where it is written, how training writes it, what it does`));
    const parts = { bytes: tourBytes, training: tourTraining, specialization: tourSpecial };
    doc.chapters.forEach((ch, i) => wrap.appendChild(h('div', { class: 'card chapter', 'data-chapter': ch.id },
      h('h3', {}, `${i + 1}. ${ch.title}`), h('p', {}, ch.text), ...parts[ch.id](ch, doc), commands(ch))));
    return wrap;
  }

  // ---------- File map ----------
  function headSlices(an, layer, head) {
    const rows = an.tensors.filter((t) => t.layer === layer && t.heads.length);
    let group = head;
    for (const t of rows) for (const x of t.heads) if (x.kind === 'q' && x.head === head && x.kv_group !== null) group = x.kv_group;
    const out = [];
    for (const t of rows) for (const x of t.heads) {
      if (x.head === ((x.kind === 'k' || x.kind === 'v') ? group : head)) out.push(Object.assign({ tensor: t.name, module: t.module, level: t.level, kind: x.kind, kv_group: x.kv_group, slice: x.slice, shape: t.shape, dtype: t.dtype, file: t.file }, x.bytes));
    }
    return { group, slices: out };
  }
  function configLine(an) {
    const c = an.config || {}, d = an.dims || {};
    const keys = ['num_attention_heads', 'n_head', 'num_key_value_heads', 'head_dim', 'hidden_size', 'n_embd', 'num_hidden_layers', 'n_layer'];
    const parts = keys.filter((k) => k in c).map((k) => `${k}: ${c[k]}`);
    if (!('head_dim' in c) && d.head_dim) parts.push(`head_dim = ${d.d_model} / ${d.n_heads} = ${d.head_dim}`);
    return parts.join(', ');
  }

  async function viewMap() {
    const an = await Data.anatomy(S.src);
    window.glassbox.anatomy = an;
    const wrap = h('section', { class: 'map' });
    const total = an.files.reduce((a, f) => a + f.size, 0);
    wrap.appendChild(h('h2', {}, `${an.path.split('/').pop()} — ${an.format}, ${an.architecture}, ${an.n_parameters.toLocaleString('en')} parameters, ${bytes(total)}`));
    if (an.warnings.length) wrap.appendChild(h('ul', { class: 'warn' }, an.warnings.map((w) => h('li', {}, w))));
    // the strip: every byte of every file, tensors as blocks coloured by level
    const strip = h('canvas', { id: 'bytestrip', height: 56, 'aria-label': 'byte map of the file' });
    const zoom = h('canvas', { id: 'headstrip', height: 70, 'aria-label': 'byte map around the selected head' });
    const detail = h('div', { class: 'detail' });
    wrap.appendChild(h('div', { class: 'stripwrap' }, strip));
    wrap.appendChild(legend(an));
    // head picker: layer × head
    const d = an.dims || {};
    const layerSel = h('select', { id: 'pick-layer', 'aria-label': 'layer' }, Array.from({ length: d.n_layers || 0 }, (_, i) => h('option', { value: i }, 'layer ' + i)));
    const headSel = h('select', { id: 'pick-head', 'aria-label': 'head' }, Array.from({ length: d.n_heads || 0 }, (_, i) => h('option', { value: i }, 'head ' + i)));
    const hh = headOf();
    if (hh) { layerSel.value = hh[0]; headSel.value = hh[1]; }
    const pick = () => { S.head = layerSel.value + '.' + headSel.value; writeHash(); showHead(); };
    layerSel.onchange = pick; headSel.onchange = pick;
    if (d.n_heads) wrap.appendChild(h('div', { class: 'picker' }, 'Head: ', layerSel, headSel, h('button', { id: 'show-head', onclick: pick }, 'show its bytes')));
    const zoomWrap = h('div', { class: 'stripwrap', id: 'headstrip-wrap', hidden: !(S.head && d.n_heads) }, zoom); // empty until a head is shown
    wrap.appendChild(zoomWrap);
    wrap.appendChild(detail);
    // tensors as blocks, one row per level
    const byLevel = {};
    for (const t of an.tensors) (byLevel[t.level] = byLevel[t.level] || []).push(t);
    const blocks = h('div', { class: 'blocks' });
    const maxBytes = Math.max(...an.tensors.map((t) => t.nbytes));
    for (const [level, ts] of Object.entries(byLevel)) {
      blocks.appendChild(h('div', { class: 'level' }, h('span', { class: 'lname' }, `${level} (${ts.length})`),
        h('span', { class: 'lblocks' }, ts.map((t) => h('button', {
          class: 'tblock' + (S.tensor === t.name ? ' sel' : ''), 'data-tensor': t.name, title: t.name,
          style: `background:${LEVEL_COLOURS[t.level] || '#ccc'};width:${6 + Math.round(22 * Math.sqrt(t.nbytes / maxBytes))}px`,
          onclick: () => { S.tensor = t.name; writeHash(); showTensor(); drawStrip(); markBlocks(); },
        }, t.layer === null ? '' : String(t.layer))))));
    }
    wrap.appendChild(h('h3', {}, 'Tensors by level (block width ∝ √bytes, label = layer)'));
    wrap.appendChild(blocks);
    function markBlocks() { for (const b of blocks.querySelectorAll('.tblock')) b.classList.toggle('sel', b.dataset.tensor === S.tensor); }

    const files = an.files.map((f) => f.file);
    let start = 0; const fileStart = {};
    for (const f of an.files) { fileStart[f.file] = start; start += f.size; }
    const X = (file, off, W) => (fileStart[file] + off) / total * W;
    function drawStrip() {
      const W = strip.width = strip.clientWidth || 900;
      const g = strip.getContext('2d');
      g.fillStyle = '#f4f4f4'; g.fillRect(0, 0, W, 56);
      for (const t of an.tensors) {
        g.fillStyle = LEVEL_COLOURS[t.level] || '#ccc';
        const x0 = X(t.file, t.offset, W), x1 = X(t.file, t.offset + t.nbytes, W);
        g.fillRect(x0, 8, Math.max(1, x1 - x0), 40);
      }
      const sel = an.tensors.find((t) => t.name === S.tensor);
      if (sel) { g.strokeStyle = '#000'; g.lineWidth = 2; const x0 = X(sel.file, sel.offset, W); g.strokeRect(x0, 4, Math.max(2, X(sel.file, sel.offset + sel.nbytes, W) - x0), 48); }
      if (files.length > 1) { g.fillStyle = '#000'; for (const f of files) g.fillRect(X(f, 0, W), 0, 1, 56); }
    }
    function tensorAt(ev) {
      const r = strip.getBoundingClientRect(), pos = (ev.clientX - r.left) / r.width * total;
      return an.tensors.find((t) => { const a = fileStart[t.file] + t.offset; return pos >= a && pos < a + Math.max(t.nbytes, total / r.width); });
    }
    strip.onmousemove = (ev) => { const t = tensorAt(ev); tip(ev, t ? [t.name, `${t.level} · ${t.dtype} · [${t.shape.join('×')}]`, `bytes ${t.offset.toLocaleString('en')} + ${t.nbytes.toLocaleString('en')}`] : null); };
    strip.onmouseleave = () => tip();
    strip.onclick = (ev) => { const t = tensorAt(ev); if (t) { S.tensor = t.name; writeHash(); showTensor(); drawStrip(); markBlocks(); } };

    function formula(t) { return (an.formulas[t.level] || '').replace('{W}', t.name); }
    function showTensor() {
      const t = an.tensors.find((x) => x.name === S.tensor);
      if (!t) return;
      const box = h('div', { class: 'card', id: 'tensor-card' },
        h('h3', {}, t.name),
        h('table', { class: 'kv' }, [['level', t.level], ['layer', t.layer === null ? '–' : t.layer], ['module', t.module],
          ['shape', '[' + t.shape.join(', ') + ']'], ['dtype / quantization', t.dtype], ['file', t.file.split('/').pop()],
          ['offset', t.offset.toLocaleString('en')], ['bytes', t.nbytes.toLocaleString('en') + ' (' + bytes(t.nbytes) + ')'],
          ['formula', formula(t)]].map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { 'data-key': k }, String(v))))),
        t.heads.length ? h('div', { class: 'chips' }, 'heads: ', t.heads.map((x) => h('button', { class: 'chip', style: `border-color:${KIND_COLOURS[x.kind]}`,
          onclick: () => { const q = x.kind === 'k' || x.kind === 'v' ? firstQueryOf(x.head) : x.head; S.head = t.layer + '.' + q; layerSel.value = t.layer; headSel.value = q; writeHash(); showHead(); } },
          `${x.kind}${x.head}${x.kv_group !== null && x.kind === 'q' ? ' g' + x.kv_group : ''}`))) : null);
      const old = detail.querySelector('#tensor-card');
      if (old) old.replaceWith(box); else detail.prepend(box);
    }
    function firstQueryOf(group) {
      const g = (an.dims || {}).group_size || 1; return group * g;
    }
    function showHead() {
      const [layer, head] = headOf();
      zoomWrap.hidden = false;
      const { group, slices } = headSlices(an, layer, head);
      window.glassbox.last.slices = slices;
      // zoomed strip: from the first to the last byte of the tensors this head lives in
      const names = [...new Set(slices.map((s) => s.tensor))];
      const ts = an.tensors.filter((t) => names.includes(t.name));
      const lo = Math.min(...ts.map((t) => fileStart[t.file] + t.offset)), hi = Math.max(...ts.map((t) => fileStart[t.file] + t.offset + t.nbytes));
      const W = zoom.width = zoom.clientWidth || 900, span = Math.max(1, hi - lo);
      const g = zoom.getContext('2d');
      g.fillStyle = '#fff'; g.fillRect(0, 0, W, 70);
      g.font = '11px system-ui, sans-serif';
      for (const t of ts) {
        const x0 = (fileStart[t.file] + t.offset - lo) / span * W, w = t.nbytes / span * W;
        g.fillStyle = '#e6e6e6'; g.fillRect(x0, 18, w, 34);
        g.fillStyle = '#555'; g.fillText(t.name.split('.').slice(-2).join('.'), x0 + 2, 64, Math.max(10, w - 4));
      }
      for (const s of slices) { // a contiguous block, or a comb of `count` runs `stride` apart
        g.fillStyle = KIND_COLOURS[s.kind];
        const base = fileStart[s.file] - lo;
        for (let i = 0; i < s.count; i++) {
          const x0 = (base + s.offset + i * (s.stride || 0)) / span * W;
          g.fillRect(x0, 18, Math.max(1, s.length / span * W), 34);
        }
      }
      g.fillStyle = '#000'; g.fillText(`bytes ${lo.toLocaleString('en')} … ${hi.toLocaleString('en')} (${bytes(span)}): head ${layer}.${head} in colour`, 2, 12);
      const card = h('div', { class: 'card', id: 'head-card' },
        h('h3', {}, `Head ${layer}.${head}` + (slices.some((s) => s.kind === 'k') ? ` — kv group ${group}` : '')),
        h('p', { class: 'path', id: 'path-line' }, pathLine(an, layer, head, slices)),
        h('table', { class: 'grid', id: 'slice-table' },
          h('tr', {}, ['kind', 'tensor', 'slice', 'kv group', 'offset', 'length', 'stride', 'count'].map((c) => h('th', {}, c))),
          slices.map((s) => h('tr', { 'data-kind': s.kind }, h('td', {}, h('span', { class: 'dot', style: `background:${KIND_COLOURS[s.kind]}` }), s.kind),
            h('td', {}, s.tensor), h('td', {}, s.slice), h('td', {}, s.kv_group === null ? '–' : s.kv_group),
            h('td', { class: 'num', 'data-offset': s.offset }, s.offset.toLocaleString('en')), h('td', { class: 'num' }, s.length.toLocaleString('en')),
            h('td', { class: 'num' }, s.stride === null ? '–' : s.stride.toLocaleString('en')), h('td', { class: 'num' }, s.count)))),
        slices.map((s) => h('div', { class: 'formula' }, `${s.kind}: ${(an.formulas[s.level] || '').replace('{W}', s.tensor)}   ⟶   ${s.tensor}${s.slice}`)),
        kindOf(S.src) !== 'run' ? h('p', {}, h('a', { href: '#', onclick: (e) => { e.preventDefault(); S.view = 'head'; render(); } }, 'open the head page →')) : null);
      const old = detail.querySelector('#head-card');
      if (old) old.replaceWith(card); else detail.appendChild(card);
    }
    requestAnimationFrame(() => { drawStrip(); if (S.tensor) showTensor(); if (S.head && d.n_heads) showHead(); });
    return wrap;
  }
  function pathLine(an, layer, head, slices) {
    const q = slices.find((s) => s.kind === 'q') || slices[0];
    if (!q) return 'this head has no slices in the file';
    const [lo, hi] = q.slice.replace(/[[\]]/g, '').split(',')[0].split(':').map(Number);
    return `config (${configLine(an)}) → module ${q.module} → tensor ${q.tensor} [${q.shape.join('×')}] → head ${layer}.${head} = rows ${lo}:${hi} ${q.slice} → bytes ${q.offset.toLocaleString('en')}…${(q.offset + q.length * q.count + (q.stride ? q.stride * (q.count - 1) - q.length * (q.count - 1) : 0)).toLocaleString('en')}`;
  }
  function legend(an) {
    return h('div', { class: 'legend' }, an.levels.map((l) => h('span', { class: 'lg' }, h('span', { class: 'dot', style: `background:${LEVEL_COLOURS[l.level] || '#ccc'}` }), `${l.level} ${l.tensors}`)));
  }

  // ---------- Atlas ----------
  const EXTRA = ['copying_act'];
  function roleNames(atlas) { return atlas.heads.length ? Object.keys(atlas.heads[0].scores).filter((n) => !EXTRA.includes(n)) : []; }
  function kvGroups(an, nHeads) {
    const d = (an && an.dims) || {}, g = d.group_size || 1;
    return Array.from({ length: nHeads }, (_, i) => Math.floor(i / g));
  }

  // each role's top heads in words: validated first, then by score; ✓ with the leading evidence's effect and kind
  function topHeads(atlas, n = 3) {
    const out = {};
    for (const x of atlas.heads) for (const r of x.roles) (out[r.role] = out[r.role] || []).push([x, r]);
    for (const k of Object.keys(out)) out[k] = out[k].sort((a, b) => (b[1].validated - a[1].validated) || (b[1].score - a[1].score)).slice(0, n)
      .map(([x, r]) => `${x.layer}.${x.head} ${r.score.toFixed(2)} ${r.validated ? '✓' : '✗'}${r.precision_sensitive ? '≈' : ''} ${(r.effect ?? r.ablation_effect) >= 0 ? '+' : ''}${+(r.effect ?? r.ablation_effect).toPrecision(3)} (${r.basis || 'total'})`);
    return out;
  }
  function topHeadsCard(atlas) {
    const tops = topHeads(atlas);
    return h('div', { class: 'card', id: 'atlas-top' }, h('h3', {}, 'Top heads per role (layer.head score; ✓ validated: leading evidence\'s signed effect, its kind)'),
      Object.keys(tops).length ? h('ul', {}, Object.entries(tops).map(([r, v]) => h('li', { 'data-role': r }, h('b', {}, r + ': '), v.join(', '))))
        : h('p', { class: 'muted' }, 'No head passes any role\'s threshold.'),
      atlas.heads.some((x) => x.roles.some((r) => r.precision_sensitive)) ? h('p', { class: 'muted small', id: 'precision-legend' }, `≈ precision-sensitive: rounding in ${atlas.dtype} could have changed this verdict (the head's row says why)`) : null);
  }
  async function viewAtlas() {
    const [an, atlas] = await Promise.all([Data.anatomy(S.src).catch(() => null), Data.atlas(S.src, false)]);
    const wrap = h('section', { class: 'atlas' });
    if (!atlas) {
      if (REPORT) return h('p', {}, 'This report has no atlas for this model.');
      wrap.appendChild(h('p', {}, 'No atlas is cached for this model yet. Computing one runs the probes and the ablations (minutes for SmolLM2).'));
      wrap.appendChild(h('button', { id: 'compute-atlas', onclick: async () => { try { await Data.atlas(S.src, true); render(); } catch (e) { fail(e); } } }, 'Compute the atlas'));
      return wrap;
    }
    window.glassbox.atlas = atlas;
    const t0 = performance.now();
    const roles = roleNames(atlas);
    if (!S.role || !roles.includes(S.role)) S.role = roles.includes('induction') ? 'induction' : roles[0];
    const L = atlas.n_layers, H = atlas.n_heads;
    const groups = kvGroups(an, H), grouped = new Set(groups).size < H;
    const byLH = new Map(atlas.heads.map((x) => [x.layer * H + x.head, x]));
    const roleBar = h('div', { class: 'roles', role: 'radiogroup' }, roles.map((r) => {
      const n = atlas.heads.filter((x) => x.roles.some((y) => y.role === r && y.validated)).length;
      return h('button', { class: r === S.role ? 'on' : '', 'data-role': r, onclick: () => { S.role = r; writeHash(); draw(); for (const b of roleBar.children) b.classList.toggle('on', b.dataset.role === r); } }, r + (n ? ` ✓${n}` : ''));
    }));
    const cell = Math.max(12, Math.min(34, Math.floor(520 / Math.max(H, 1)), Math.floor(640 / Math.max(L, 1))));
    const left = 34, top = 22, bottom = grouped ? 28 : 8;
    const cv = h('canvas', { id: 'heatmap', width: left + H * cell + 4, height: top + L * cell + bottom, 'aria-label': 'layers by heads heatmap' });
    const panel = h('div', { class: 'side', id: 'head-panel' }, h('p', { class: 'muted' }, 'Click a head.'));
    const scaleBar = h('canvas', { width: 200, height: 12 });
    wrap.appendChild(h('h2', {}, `Atlas of ${atlas.model}: ${L} layers × ${H} heads` + (grouped ? `, ${new Set(groups).size} kv groups` : '')));
    wrap.appendChild(roleBar);
    wrap.appendChild(h('div', { class: 'atlasrow' }, h('div', {}, cv,
      h('div', { class: 'scale' }, '0 ', scaleBar, ' 1 score · ', h('span', { class: 'mark' }, '●'), ' validated · ', h('span', { class: 'mark' }, '○'), ' role, not validated')), panel));
    wrap.appendChild(h('p', { class: 'muted small' }, atlas.validation || ''));
    wrap.appendChild(topHeadsCard(atlas));
    function roleOf(x) { return x.roles.find((y) => y.role === S.role); }
    function draw() {
      const g = cv.getContext('2d');
      g.fillStyle = '#fff'; g.fillRect(0, 0, cv.width, cv.height);
      g.font = '10px system-ui, sans-serif'; g.fillStyle = '#333'; g.textAlign = 'right';
      for (let l = 0; l < L; l++) if (cell >= 12 || l % 5 === 0) g.fillText(String(l), left - 4, top + l * cell + cell / 2 + 3);
      g.textAlign = 'center';
      for (let k = 0; k < H; k++) g.fillText(String(k), left + k * cell + cell / 2, top - 6);
      for (let l = 0; l < L; l++) for (let k = 0; k < H; k++) {
        const x = byLH.get(l * H + k); if (!x) continue;
        const v = x.scores[S.role];
        g.fillStyle = v === undefined || v === null ? '#ddd' : colour(v);
        g.fillRect(left + k * cell, top + l * cell, cell - 1, cell - 1);
        const r = roleOf(x);
        if (r) {
          const cx = left + k * cell + cell / 2 - 0.5, cy = top + l * cell + cell / 2 - 0.5;
          g.beginPath(); g.arc(cx, cy, cell * 0.22, 0, 2 * Math.PI);
          g.lineWidth = 2; g.strokeStyle = v > 0.6 ? '#000' : '#fff';
          if (r.validated) { g.fillStyle = g.strokeStyle; g.fill(); } else g.stroke();
        }
      }
      const sel = headOf();
      if (sel && sel[0] < L && sel[1] < H) { g.strokeStyle = '#e00'; g.lineWidth = 2; g.strokeRect(left + sel[1] * cell - 1, top + sel[0] * cell - 1, cell + 1, cell + 1); }
      if (grouped) { // brackets under the heads of each kv group
        g.strokeStyle = '#555'; g.lineWidth = 1; g.fillStyle = '#333';
        for (const grp of new Set(groups)) {
          const hs = groups.map((x, i) => x === grp ? i : -1).filter((i) => i >= 0);
          const x0 = left + hs[0] * cell + 2, x1 = left + (hs[hs.length - 1] + 1) * cell - 3, y = top + L * cell + 6;
          g.beginPath(); g.moveTo(x0, y - 3); g.lineTo(x0, y); g.lineTo(x1, y); g.lineTo(x1, y - 3); g.stroke();
          g.fillText('kv g' + grp, (x0 + x1) / 2, y + 12);
        }
      }
      const sg = scaleBar.getContext('2d');
      for (let i = 0; i < 200; i++) { sg.fillStyle = colour(i / 199); sg.fillRect(i, 0, 1, 12); }
    }
    function at(ev) {
      const r = cv.getBoundingClientRect();
      const k = Math.floor((ev.clientX - r.left - left) / cell), l = Math.floor((ev.clientY - r.top - top) / cell);
      return (k >= 0 && k < H && l >= 0 && l < L) ? byLH.get(l * H + k) : null;
    }
    cv.onmousemove = (ev) => {
      const x = at(ev); if (!x) return tip();
      const r = roleOf(x);
      tip(ev, [`L${x.layer}.H${x.head}` + (grouped ? ` (kv g${groups[x.head]})` : ''), `${S.role}: ${fmt(x.scores[S.role])}`,
        r ? `${r.validated ? '✓ validated' : '✗ not validated'}, ablation effect ${signed(r.ablation_effect)}` : 'no role here']);
    };
    cv.onmouseleave = () => tip();
    cv.onclick = (ev) => { const x = at(ev); if (x) { S.head = x.layer + '.' + x.head; writeHash(); draw(); showPanel(); } };
    async function showPanel() {
      const [l, k] = headOf();
      const x = byLH.get(l * H + k); if (!x) return;
      panel.replaceChildren(headCard(x, atlas, grouped ? groups : null), h('p', {}, h('a', { href: '#', id: 'open-head', onclick: (e) => { e.preventDefault(); S.view = 'head'; render(); } }, `open the head page of ${l}.${k} →`)),
        patternPanel(l, k));
    }
    draw();
    window.glassbox.last.atlas_draw_ms = performance.now() - t0;
    window.glassbox.last.atlas_geom = { left, top, cell, L, H };
    if (S.head) requestAnimationFrame(showPanel);
    return wrap;
  }

  function headCard(x, atlas, groups) {
    const scores = Object.entries(x.scores).sort((a, b) => b[1] - a[1]);
    const roleRows = x.roles.map((r) => h('tr', { 'data-role': r.role },
      h('td', {}, r.role), h('td', { class: 'num' }, fmt(r.score)), h('td', { class: 'num' }, signed(r.ablation_effect, 4)),
      h('td', { class: 'num' }, r.random_effect === undefined ? (r.null_mean === undefined ? '–' : `${signed(r.null_mean, 4)} ± ${fmt(r.null_sd, 4)}`) : signed(r.random_effect, 4)),
      h('td', { class: 'num' }, r.ci ? `[${signed(r.ci[0], 3)}, ${signed(r.ci[1], 3)}]` : '–'), h('td', { class: 'num' }, r.p === undefined ? '–' : fmt(r.p, 4)),
      h('td', {}, (r.evidence || []).join(', ') || '–'), h('td', { class: r.validated ? 'ok' : 'no', title: r.precision_why || '' }, (r.validated ? '✓' : '✗') + (r.precision_sensitive ? '≈ ' + r.precision_why : ''))));
    return h('div', { class: 'card', id: 'head-scores' },
      h('h3', {}, `Head ${x.layer}.${x.head}` + (groups ? ` · kv group ${groups[x.head]} (query heads ${groups.map((g, i) => g === groups[x.head] ? i : -1).filter((i) => i >= 0).join(', ')})` : '')),
      x.roles.length ? h('table', { class: 'grid' }, h('tr', {}, ['role', 'score', 'ablation effect', 'random heads / null', 'ci', 'p', 'evidence', 'validated'].map((c) => h('th', {}, c))), roleRows)
        : h('p', { class: 'muted' }, 'No role above its threshold.'),
      h('details', {}, h('summary', {}, 'all probe scores'), h('table', { class: 'grid' }, scores.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, fmt(v)), h('td', {}, h('span', { class: 'hbar', style: `width:${Math.round(80 * Math.max(0, Math.min(1, v)))}px;background:${colour(v)}` })))))));
  }

  // ---------- attention pattern on a typed text (canvas, one pixel per cell at most) ----------
  function patternPanel(layer, head) {
    const box = h('div', { class: 'card pattern', id: 'pattern-box' });
    const ta = h('textarea', { id: 'pattern-text', rows: 3, 'aria-label': 'text', disabled: REPORT || null }, REPORT ? '' : S.text);
    const go = h('button', { id: 'pattern-go', disabled: REPORT || null }, 'Show attention');
    const out = h('div', { class: 'pattern-out' });
    box.append(...[h('h3', {}, `Attention of ${layer}.${head}`), REPORT ? h('p', { class: 'muted small' }, 'Offline report: the pattern on the text it was built with (values quantized to 1/255). Run `glassbox serve` to type your own.') : ta, REPORT ? null : go, out].filter(Boolean));
    const run = async () => {
      S.text = ta.value;
      out.replaceChildren(h('p', { class: 'muted' }, 'running…'));
      const t0 = performance.now();
      try {
        const p = await Data.pattern(S.src, layer, head, S.text);
        if (!p) { out.replaceChildren(h('p', { class: 'muted' }, 'No pattern stored for this head.')); return; }
        out.replaceChildren(drawPattern(p));
        window.glassbox.last.pattern = { layer, head, tokens: p.tokens, shape: p.shape, pattern: p.pattern, ms: performance.now() - t0 };
        document.body.dataset.pattern = layer + '.' + head + ':' + p.tokens.length;
      } catch (e) { out.replaceChildren(h('div', { class: 'error' }, 'error: ' + e.message)); }
    };
    go.onclick = run;
    if (REPORT) requestAnimationFrame(run);
    return box;
  }

  function drawPattern(p) {
    const T = p.shape[0], K = p.shape[1];
    const wrap = h('div', {});
    if (p.truncated) wrap.appendChild(h('p', { class: 'warn' }, 'The text was cut at 1,024 tokens.'));
    if (p.kv_group !== undefined && p.heads_in_group && p.heads_in_group.length > 1) wrap.appendChild(h('p', { class: 'small' }, `kv group ${p.kv_group}: shares its keys and values with query heads ${p.heads_in_group.join(', ')}`));
    // percentile clamp: attention is heavy-tailed, so colour by value / (99th percentile), stated below
    const vals = []; const step = Math.max(1, Math.floor(T * K / 20000));
    for (let i = 0; i < T * K; i += step) vals.push(p.pattern[i]);
    vals.sort((a, b) => a - b);
    const clampAt = Math.max(1e-6, vals[Math.floor(vals.length * 0.99)] || 1);
    const img = new ImageData(K, T);
    for (let q = 0; q < T; q++) for (let k = 0; k < K; k++) {
      const i = q * K + k, o = i * 4;
      if (p.causal !== false && k > q) { const hatch = ((q + k) % 6 === 0) ? 236 : 246; img.data[o] = img.data[o + 1] = img.data[o + 2] = hatch; img.data[o + 3] = 255; continue; }
      const c = Math.max(0, Math.min(255, Math.round(p.pattern[i] / clampAt * 255)));
      img.data[o] = SEQ[c * 3]; img.data[o + 1] = SEQ[c * 3 + 1]; img.data[o + 2] = SEQ[c * 3 + 2]; img.data[o + 3] = 255;
    }
    const cv = h('canvas', { id: 'pattern-canvas', width: K, height: T, 'aria-label': 'attention pattern, queries as rows, keys as columns' });
    cv.getContext('2d').putImageData(img, 0, 0);
    const size = Math.min(520, Math.max(T, 1) * Math.max(1, Math.floor(520 / Math.max(T, 1))));
    cv.style.width = size + 'px'; cv.style.height = Math.round(size * T / K) + 'px';
    const info = h('div', { class: 'inspect', id: 'pattern-info' }, 'Hover a cell: query row, key column.');
    const strip = h('div', { class: 'tokens', id: 'token-strip' });
    const spans = p.tokens.map((t, i) => h('span', { class: 'tok', 'data-i': i, title: '#' + i }, visible(t)));
    strip.append(...spans);
    let lit = [];
    function light(q) {
      for (const s of lit) s.style.background = '';
      lit = [];
      if (q === null) return;
      for (let k = 0; k < K; k++) {
        const v = p.pattern[q * K + k];
        if (v > 0.02) { spans[k].style.background = `rgba(230,97,1,${Math.min(1, v / clampAt)})`; lit.push(spans[k]); }
      }
      spans[q].style.outline = '2px solid #0072B2'; lit.push(spans[q]);
      spans[q].addEventListener('mouseleave', () => { spans[q].style.outline = ''; }, { once: true });
    }
    const cellAt = (ev) => {
      const r = cv.getBoundingClientRect();
      const k = Math.floor((ev.clientX - r.left) / r.width * K), q = Math.floor((ev.clientY - r.top) / r.height * T);
      return (q >= 0 && q < T && k >= 0 && k < K) ? [q, k] : null;
    };
    cv.onmousemove = (ev) => {
      const c = cellAt(ev); if (!c) return;
      const [q, k] = c, v = p.pattern[q * K + k];
      const lens = p.lens && p.lens[q] ? ' · its output reads as ' + p.lens[q].map((x) => `${visible(x[0])} ${fmt(x[1], 2)}`).join(', ') : '';
      info.textContent = `query #${q} ${visible(p.tokens[q])} → key #${k} ${visible(p.tokens[k])}: ${fmt(v, 4)}${lens}`;
      light(q);
    };
    strip.onmouseover = (ev) => { const i = ev.target.dataset && ev.target.dataset.i; if (i !== undefined) { light(+i); info.textContent = `token #${i} ${visible(p.tokens[+i])}: keys lit by weight`; } };
    wrap.append(h('div', { class: 'patternrow' }, cv), h('p', { class: 'small muted' }, `${T} tokens; colour = weight / ${fmt(clampAt, 3)} (99th percentile), clamped; masked cells hatched` + (p.quantized ? '; quantized to 1/255' : '')), info, strip);
    if (p.lens && p.lens.length) {
      const rows = p.lens.slice(0, 64).map((x, i) => h('tr', {}, h('td', { class: 'num' }, i), h('td', {}, visible(p.tokens[i])), h('td', {}, x.map((y) => visible(y[0])).join('  '))));
      wrap.appendChild(h('details', { id: 'lens' }, h('summary', {}, 'Lens of its output: the top tokens its direct write promotes at each position' + (p.lens.length > 64 ? ' (first 64)' : '')), h('table', { class: 'grid' }, rows)));
    }
    return wrap;
  }

  // ---------- Head page ----------
  async function viewHead() {
    const an = await Data.anatomy(S.src);
    const atlas = await Data.atlas(S.src, false);
    const d = an.dims || {};
    if (!S.head) S.head = '0.0';
    const [layer, head] = headOf();
    const wrap = h('section', { class: 'headpage' });
    const layerSel = h('select', { id: 'hp-layer', 'aria-label': 'layer' }, Array.from({ length: d.n_layers || 0 }, (_, i) => h('option', { value: i }, 'layer ' + i)));
    const headSel = h('select', { id: 'hp-head', 'aria-label': 'head' }, Array.from({ length: d.n_heads || 0 }, (_, i) => h('option', { value: i }, 'head ' + i)));
    layerSel.value = layer; headSel.value = head;
    layerSel.onchange = headSel.onchange = () => { S.head = layerSel.value + '.' + headSel.value; render(); };
    const groups = kvGroups(an, d.n_heads || 0);
    wrap.appendChild(h('h2', {}, `Head ${layer}.${head} of ${label(S.src)}`, ' ', layerSel, headSel));
    const { slices } = headSlices(an, layer, head);
    wrap.appendChild(h('div', { class: 'card' }, h('h3', {}, 'Where it is written'), h('p', { class: 'path' }, pathLine(an, layer, head, slices)),
      h('table', { class: 'grid', id: 'hp-bytes' }, h('tr', {}, ['kind', 'tensor', 'slice', 'offset', 'length', 'stride', 'count'].map((c) => h('th', {}, c))),
        slices.map((s) => h('tr', {}, h('td', {}, s.kind), h('td', {}, s.tensor), h('td', {}, s.slice), h('td', { class: 'num', 'data-offset': s.offset }, s.offset.toLocaleString('en')),
          h('td', { class: 'num' }, s.length.toLocaleString('en')), h('td', { class: 'num' }, s.stride === null ? '–' : s.stride.toLocaleString('en')), h('td', { class: 'num' }, s.count))))));
    const x = atlas && atlas.heads.find((y) => y.layer === layer && y.head === head);
    wrap.appendChild(x ? headCard(x, atlas, new Set(groups).size < groups.length ? groups : null) : h('div', { class: 'card' }, h('h3', {}, 'Role evidence'), h('p', { class: 'muted' }, 'No atlas yet: compute it on the Atlas tab.')));
    const ovBox = h('div', { class: 'card', id: 'ov-box' }, h('h3', {}, 'What it writes (OV circuit)'), h('p', { class: 'muted' }, 'loading…'));
    wrap.appendChild(ovBox);
    wrap.appendChild(patternPanel(layer, head));
    Data.ov(S.src, layer, head).then((ov) => {
      if (!ov) { ovBox.replaceChildren(h('h3', {}, 'What it writes (OV circuit)'), h('p', { class: 'muted' }, 'Not in this report (only heads with a role are).')); return; }
      const list = (xs) => h('ol', {}, xs.map((t) => h('li', {}, h('code', {}, visible(t[0])), ' ', fmt(t[1], 2))));
      ovBox.replaceChildren(h('h3', {}, 'What it writes (OV circuit)'),
        h('p', { class: 'small muted' }, `Strongest direction of W_O·W_V (${(100 * ov.share_of_first_direction).toFixed(1)}% of its squared singular values): tokens whose embedding it reads most, and tokens its write promotes most through the unembedding.`),
        h('div', { class: 'cols' }, h('div', {}, h('b', {}, 'reads'), list(ov.reads)), h('div', { id: 'ov-writes' }, h('b', {}, 'writes'), list(ov.writes))));
    }).catch((e) => ovBox.replaceChildren(h('h3', {}, 'What it writes (OV circuit)'), h('p', { class: 'muted' }, e.message)));
    return wrap;
  }

  // ---------- Lens and patching grids ----------
  const CLEAN = 'When Mary and John went to the store, John gave a drink to';
  const CORRUPT = 'When Mary and John went to the store, Mary gave a drink to';
  async function viewLens() {
    const wrap = h('section', { class: 'lens' });
    const lensBox = h('div', { class: 'card', id: 'lens-box' }, h('h3', {}, 'Logit lens: each layer\'s residual read through the final norm and the unembedding'));
    const lensOut = h('div', {});
    if (REPORT) lensBox.appendChild(h('p', { class: 'muted small' }, 'Offline report: the lens on the text it was built with.'));
    const ta = h('textarea', { id: 'lens-text', rows: 2, 'aria-label': 'lens text' }, S.text);
    const go = h('button', { id: 'lens-go' }, 'Run the lens');
    if (!REPORT) lensBox.append(ta, go);
    lensBox.appendChild(lensOut);
    const runLens = async () => {
      lensOut.replaceChildren(h('p', { class: 'muted' }, 'running…'));
      try {
        const doc = await Data.lens(S.src, ta.value);
        if (!doc) { lensOut.replaceChildren(h('p', { class: 'muted' }, 'No lens in this report.')); return; }
        window.glassbox.last.lens = doc;
        lensOut.replaceChildren(lensGrid(doc));
        document.body.dataset.lens = String(doc.tokens.length);
      } catch (e) { lensOut.replaceChildren(h('div', { class: 'error' }, 'error: ' + e.message)); }
    };
    go.onclick = runLens;
    wrap.appendChild(lensBox);
    const pBox = h('div', { class: 'card', id: 'patch-box' }, h('h3', {}, 'Activation patching (denoising): run the corrupt prompt, put back one clean cell, measure the recovery'));
    const pOut = h('div', {});
    const clean = h('input', { id: 'patch-clean', size: 70, value: CLEAN, 'aria-label': 'clean prompt' });
    const corrupt = h('input', { id: 'patch-corrupt', size: 70, value: CORRUPT, 'aria-label': 'corrupt prompt' });
    const metric = h('input', { id: 'patch-metric', size: 30, value: 'logit_diff: Mary - John', 'aria-label': 'metric' });
    const over = h('select', { id: 'patch-over', 'aria-label': 'over' }, ['heads', 'resid', 'mlp'].map((o) => h('option', { value: o }, o)));
    const pgo = h('button', { id: 'patch-go' }, 'Patch');
    if (!REPORT) pBox.append(h('div', { class: 'form' }, h('label', {}, 'clean ', clean), h('label', {}, 'corrupt ', corrupt), h('label', {}, 'metric ', metric), h('label', {}, 'over ', over), pgo));
    else pBox.appendChild(h('p', { class: 'muted small' }, 'Offline report: the patching run it was built with.'));
    pBox.appendChild(pOut);
    const runPatch = async () => {
      pOut.replaceChildren(h('p', { class: 'muted' }, 'patching… (one batch row per cell)'));
      try {
        const doc = await Data.patch(S.src, clean.value, corrupt.value, metric.value, over.value);
        if (!doc) { pOut.replaceChildren(h('p', { class: 'muted' }, 'No patching run in this report.')); return; }
        window.glassbox.last.patch = doc;
        pOut.replaceChildren(patchGrid(doc));
        document.body.dataset.patch = doc.site;
      } catch (e) { pOut.replaceChildren(h('div', { class: 'error' }, 'error: ' + e.message)); }
    };
    pgo.onclick = runPatch;
    wrap.appendChild(pBox);
    if (REPORT) requestAnimationFrame(() => { runLens(); runPatch(); });
    return wrap;
  }

  function gridCanvas(rows, cols, value, colourOf, id, label, hover) {
    const cw = Math.max(6, Math.min(56, Math.floor(1100 / Math.max(cols.length, 1)))), ch = Math.max(6, Math.min(20, Math.floor(620 / Math.max(rows.length, 1))));
    const left = 40, top = 4, bottom = 64;
    const cv = h('canvas', { id, width: left + cols.length * cw + 4, height: top + rows.length * ch + bottom, 'aria-label': label });
    const g = cv.getContext('2d');
    g.fillStyle = '#fff'; g.fillRect(0, 0, cv.width, cv.height);
    g.font = '10px system-ui, sans-serif';
    for (let r = 0; r < rows.length; r++) {
      g.fillStyle = '#333'; g.textAlign = 'right'; if (ch >= 10 || r % 5 === 0) g.fillText(rows[r], left - 4, top + r * ch + ch / 2 + 3);
      for (let c = 0; c < cols.length; c++) {
        const [fill, text, dark] = colourOf(r, c);
        g.fillStyle = fill; g.fillRect(left + c * cw, top + r * ch, cw - 1, ch - 1);
        if (text && cw >= 30 && ch >= 12) { g.fillStyle = dark ? '#fff' : '#000'; g.textAlign = 'left'; g.fillText(text.slice(0, Math.floor(cw / 6)), left + c * cw + 2, top + r * ch + ch / 2 + 3); }
      }
    }
    g.save(); g.fillStyle = '#333'; g.textAlign = 'right';
    for (let c = 0; c < cols.length; c++) { g.save(); g.translate(left + c * cw + cw / 2 + 3, top + rows.length * ch + 4); g.rotate(-Math.PI / 3); g.fillText(cols[c].slice(0, 10), 0, 0); g.restore(); }
    g.restore();
    cv.onmousemove = (ev) => {
      const b = cv.getBoundingClientRect();
      const c = Math.floor((ev.clientX - b.left - left) / cw), r = Math.floor((ev.clientY - b.top - top) / ch);
      if (r >= 0 && r < rows.length && c >= 0 && c < cols.length) tip(ev, hover(r, c)); else tip();
    };
    cv.onmouseleave = () => tip();
    return cv;
  }

  function lensGrid(doc) {
    const L = doc.layers.length, T = doc.tokens.length;
    let kmax = 1e-9;
    for (const l of doc.layers) for (const k of l.kl_to_final) kmax = Math.max(kmax, k);
    const rows = doc.layers.map((l, i) => i === 0 ? 'emb' : i === L - 1 ? 'out' : String(l.layer)).reverse();
    const at = (r) => doc.layers[L - 1 - r];
    const cv = gridCanvas(rows, doc.tokens.map(visible), 0, (r, c) => {
      const v = 1 - at(r).kl_to_final[c] / kmax; // bright = close to the final distribution
      return [colour(v), visible(at(r).top_tokens[c][0]), v < 0.55];
    }, 'lens-canvas', 'logit lens: layers by positions', (r, c) => [`layer ${rows[r]}, position ${c} ${visible(doc.tokens[c])}`,
      `top token ${visible(at(r).top_tokens[c][0])} p=${fmt(at(r).top_tokens[c][1], 3)}`, `KL to final ${fmt(at(r).kl_to_final[c], 3)} nats`]);
    return h('div', {}, doc.truncated ? h('p', { class: 'warn' }, 'The lens reads the first 48 tokens.') : null, cv,
      h('p', { class: 'small muted' }, `colour: KL(final ‖ layer) from 0 (bright) to ${kmax.toPrecision(3)} nats (dark); text: the layer's top token`));
  }

  function patchGrid(doc) {
    const cv = gridCanvas(doc.rows.map(String), doc.cols.map(String), 0, (r, c) => {
      const e = doc.effect[r][c], v = Math.max(-1, Math.min(1, e));
      return [colour((v + 1) / 2, DIV), Math.abs(e) >= 0.1 ? fmt(e, 2) : '', Math.abs(v) > 0.6];
    }, 'patch-canvas', 'patching effect heatmap', (r, c) => [`layer ${doc.rows[r]}, ${doc.site === 'heads' ? 'head' : 'position'} ${doc.cols[c]}`,
      `effect ${fmt(doc.effect[r][c], 3)} (0 = corrupt, 1 = clean)`, `metric ${fmt(doc.value[r][c], 3)}`]);
    return h('div', {}, h('p', { class: 'small' }, `${doc.metric}: clean ${fmt(doc.clean, 3)}, corrupt ${fmt(doc.corrupt, 3)}; ${doc.forwards} forwards. Colour: PuOr, purple −1 … white 0 … orange +1 (1 = the cell alone restores the clean metric).`), cv,
      h('table', { class: 'grid', id: 'patch-top' }, h('tr', {}, ['layer', doc.site === 'heads' ? 'head' : 'position', 'effect'].map((x) => h('th', {}, x))),
        doc.top.slice(0, 8).map((t) => h('tr', {}, h('td', { class: 'num' }, t.layer), h('td', { class: 'num' }, t.head !== undefined ? t.head : t.position), h('td', { class: 'num' }, fmt(t.effect, 3))))));
  }

  // ---------- Facts: causal tracing (glassbox facts), the writing neurons and their bytes, an edit's diff ----------
  const KIND_NAMES = { resid: 'residual stream', mlp: 'MLP output', attn: 'attention output', mlp_window: 'MLP window' };
  function factsHeat(doc, kind) {
    const a = doc.answer, gap = a.p_clean - a.p_corrupt, grid = doc.restore[kind], subj = new Set(doc.subject.tokens);
    const rows = doc.tokens.map((t, i) => visible(t) + (subj.has(i) ? '*' : ''));
    const cols = grid.map((_, l) => String(l)), pk = doc.peak[kind];
    const cv = gridCanvas(rows, cols, 0, (r, c) => {
      const p = grid[c][r], v = gap > 0 ? Math.max(0, Math.min(1, (p - a.p_corrupt) / gap)) : 0;
      return [colour(v), (c === pk.layer && r === pk.token ? '●' : '') + fmt(p, 2), v > 0.5];
    }, 'facts-' + kind, `${KIND_NAMES[kind]} restored: tokens by layers`, (r, c) => [`${KIND_NAMES[kind]} restored at layer ${c}` +
      (kind === 'mlp_window' ? ` (window of ${doc.window} centred)` : '') + `, token ${r} ${rows[r]}`, `p(${visible(a.token)}) = ${fmt(grid[c][r], 4)}`,
      `share of the gap ${gap > 0 ? fmt((grid[c][r] - a.p_corrupt) / gap, 3) : '–'}`]);
    return h('div', { class: 'card facts-kind', 'data-kind': kind }, h('h3', {}, `${KIND_NAMES[kind]} (${kind})`), cv);
  }
  function neuronBytes(b) {
    return ['gate', 'in', 'out'].filter((k) => b[k]).map((k) => h('div', { class: 'small' }, `${k}: ${b[k].tensor}${b[k].slice} — bytes ${num(b[k].offset)} + ${num(b[k].length)}` +
      (b[k].count > 1 ? ` × ${num(b[k].count)} every ${num(b[k].stride)}` : '')));
  }
  function factsEdit(e) {
    const ok = (xs, key) => `${xs.filter((x) => x[key]).length}/${xs.length}`;
    return h('div', { class: 'card', id: 'facts-edit' }, h('h3', {}, `Edit: ${visible(e.old)} → ${visible(e.new)} at layer ${e.layer} (${e.tensor})`),
      h('table', { class: 'kv' }, [['prompt', e.prompt], ['efficacy', `p(new) ${fmt(e.efficacy.p_new, 3)}, p(old) ${fmt(e.efficacy.p_old, 3)}, top-1 ${visible(e.efficacy.top1)}`],
        ['paraphrases', `${ok(e.paraphrase, 'success')} give the new answer`], ['specificity', `${ok(e.specificity, 'kept')} other facts unchanged`],
        ['fluency', `perplexity ${fmt(e.fluency.ppl_before, 3)} → ${fmt(e.fluency.ppl_after, 3)} (×${fmt(e.fluency.ratio, 4)}, ${e.fluency.tokens} tokens)`],
        ['written to', e.out || '–']].map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, String(v))))),
      h('table', { class: 'grid', id: 'facts-diff' }, h('tr', {}, ['tensor', 'bytes changed', 'ranges'].map((c) => h('th', {}, c))),
        e.diff.map((d) => h('tr', {}, h('td', {}, d.tensor), h('td', { class: 'num' }, num(d.bytes_changed)),
          h('td', { class: 'num small' }, d.ranges.slice(0, 6).map((r) => `[${num(r[0])}, ${num(r[1])})`).join(' ') + (d.ranges.length > 6 ? ` … (${d.ranges.length})` : ''))))));
  }
  async function viewFacts() {
    const facts = await Data.facts(S.src);
    const wrap = h('section', { class: 'facts' });
    const doc = facts && facts.trace, ed = facts && facts.edit;
    window.glassbox.facts = facts;
    if (!doc) wrap.appendChild(h('p', { id: 'facts-none' }, `No tracing of ${label(S.src)} yet. Make one with: glassbox facts ${S.src} --prompt "The Colosseum is located in the city of" --subject "The Colosseum"` +
      ' (and an edit with: glassbox facts edit … --new " Paris" --out DIR)'));
    if (doc) {
      const a = doc.answer, gap = a.p_clean - a.p_corrupt;
      wrap.appendChild(h('h2', {}, `“${doc.prompt}” → ${visible(a.token)}: where ${doc.model} recalls it`));
      wrap.appendChild(h('p', { id: 'facts-summary' }, `Subject “${doc.subject.text}” = tokens ${doc.subject.tokens.join(', ')} (starred), noised with ${doc.noise.scale.toPrecision(3)} × N(0,1) over ${doc.noise.samples} samples. ` +
        `p(${visible(a.token)}): clean ${fmt(a.p_clean, 4)}, subject corrupted ${fmt(a.p_corrupt, 4)}. Each cell: the probability when that one state is restored to its clean value ` +
        `(colour: share of the clean − corrupted gap, 0 dark … 1 bright; ● the peak).` + (doc.cost ? ` ${doc.cost.forwards} forwards, ${fmt(doc.cost.seconds, 1)} s.` : '')));
      wrap.appendChild(h('table', { class: 'grid', id: 'facts-peaks' }, h('tr', {}, ['kind', 'layer', 'token', 'p', 'share of the gap'].map((c) => h('th', {}, c))),
        Object.entries(doc.peak).map(([k, p]) => h('tr', { 'data-kind': k }, h('td', {}, KIND_NAMES[k] || k), h('td', { class: 'num' }, p.layer), h('td', {}, `${p.token} ${visible(doc.tokens[p.token])}`),
          h('td', { class: 'num' }, fmt(p.p, 4)), h('td', { class: 'num' }, gap > 0 ? fmt((p.p - a.p_corrupt) / gap, 3) : '–')))));
      for (const k of Object.keys(doc.restore)) wrap.appendChild(factsHeat(doc, k));
      if (doc.neurons && doc.neurons.length) {
        const z = doc.zeroing;
        wrap.appendChild(h('div', { class: 'card', id: 'facts-neurons' }, h('h3', {}, `Neurons writing ${visible(a.token)} at layer ${doc.neurons[0].layer}, token ${z ? z.token : '–'}`),
          z ? h('p', {}, `Zeroing these ${z.k}: p ${fmt(z.p_clean, 4)} → ${fmt(z.p_zeroed, 4)}; it lowers p more than ${z.beats} of ${z.of} random sets of ${z.k} (their p ${fmt(Math.min(...z.random_p), 4)}–${fmt(Math.max(...z.random_p), 4)}).`) : '',
          h('table', { class: 'grid' }, h('tr', {}, ['neuron', 'write', 'activation', 'where in the file'].map((c) => h('th', {}, c))),
            doc.neurons.map((n) => h('tr', {}, h('td', { class: 'num' }, n.index), h('td', { class: 'num' }, fmt(n.write, 4)), h('td', { class: 'num' }, fmt(n.activation, 4)), h('td', {}, neuronBytes(n.bytes)))))));
      }
    }
    if (ed) wrap.appendChild(factsEdit(ed));
    return wrap;
  }

  // ---------- Timeline (training runs): every run listed, side by side (seeds, inits) ----------
  async function viewTimeline() {
    const runs = [S.src, ...(window.glassbox.sources.sources || []).filter((x) => x.kind === 'run' && x.src !== S.src).map((x) => x.src)];
    const docs = [];
    for (const r of runs) docs.push([r, await Data.timeline(r)]);
    const tl = docs[0][1];
    if (!tl) return h('p', {}, 'No timeline for this run.');
    window.glassbox.timeline = tl;
    const cps = tl.checkpoints || [];
    const heads = (cps[cps.length - 1] || { heads: [] }).heads;
    const roles = heads.length ? Object.keys(heads[0].scores) : [];
    if (!S.role || !roles.includes(S.role)) S.role = roles.includes('induction') ? 'induction' : roles[0];
    const wrap = h('section', { class: 'timeline' });
    wrap.appendChild(h('h2', {}, `Timeline: ${S.role} score of every head over training, loss below` + (docs.length > 1 ? ` — ${docs.length} runs side by side` : '')));
    wrap.appendChild(h('div', { class: 'roles' }, roles.map((r) => h('button', { class: r === S.role ? 'on' : '', 'data-role': r, onclick: () => { S.role = r; writeHash(); render(); } }, r))));
    wrap.appendChild(h('div', { class: 'runs' }, docs.filter((d) => d[1]).map(([name, doc], i) => h('div', { class: 'card' }, h('h3', {}, label(name)), timelineChart(doc, i === 0 ? 'timeline-canvas' : null)))));
    const pcs = (tl.phase_changes || []);
    wrap.appendChild(h('div', { class: 'card' }, h('h3', {}, `Phase changes in ${label(S.src)}`), pcs.length ? h('table', { class: 'grid', id: 'phase-table' },
      h('tr', {}, ['role', 'head', 'step'].map((c) => h('th', {}, c))), pcs.map((p) => h('tr', {}, h('td', {}, p.role), h('td', {}, `L${p.layer}.H${p.head}`), h('td', { class: 'num' }, p.step))))
      : h('p', { class: 'muted' }, 'none detected')));
    const w = tl.writes;
    if (w && w.windows) {
      const levels = [...new Set(w.windows.flatMap((x) => x.levels.map((l) => l.level)))];
      wrap.appendChild(h('div', { class: 'card' }, h('h3', {}, 'Where training wrote: share of the update (‖Δw‖²) per level and the top heads, per window of steps'),
        h('table', { class: 'grid', id: 'writes-table' }, h('tr', {}, h('th', {}, 'steps'), levels.map((l) => h('th', {}, l)), h('th', {}, 'top heads (share of head updates)')),
          w.windows.map((x) => { const by = Object.fromEntries(x.levels.map((l) => [l.level, l.update_share]));
            return h('tr', { class: x.all ? 'all' : '' }, h('td', {}, x.all ? `all (${x.start}–${x.end})` : `${x.start}–${x.end}`), levels.map((l) => h('td', { class: 'num' }, by[l] === undefined ? '–' : (100 * by[l]).toFixed(1) + '%')),
              h('td', {}, x.top_heads.slice(0, 3).map((y) => `L${y.layer}.H${y.head} ${(100 * y.share).toFixed(1)}%`).join(', '))); }))));
    }
    for (const ex of tl.examples || []) wrap.appendChild(examplesCard(ex));
    return wrap;
  }

  // the training rows that wrote a head (`glassbox writes --examples`): text spans, the repeated part marked
  function spanText(r) {
    // cut the text at the range edges; a repeated range wins over a source range where they meet
    const marks = [...(r.source_chars || []).map(([a, b]) => [a, b, 'src']), ...(r.repeated_chars || []).map(([a, b]) => [a, b, 'rep'])];
    const cls = new Array(r.text.length).fill('');
    for (const [a, b, c] of marks) for (let i = a; i < b; i++) if (cls[i] !== 'rep') cls[i] = c;
    const ind = new Array(r.text.length).fill(false); // tokens induction could predict: underlined inside
    for (const [a, b] of r.induction_chars || []) for (let i = a; i < b; i++) ind[i] = true;
    const underlined = (a, b) => {
      const kids = [];
      for (let i = a; i < b;) {
        let j = i; while (j < b && ind[j] === ind[i]) j++;
        kids.push(ind[i] ? h('u', { class: 'ind', title: 'predictable by induction: [A][B] … [A] → [B]' }, r.text.slice(i, j)) : document.createTextNode(r.text.slice(i, j)));
        i = j;
      }
      return kids;
    };
    const out = [];
    for (let i = 0; i < r.text.length;) {
      let j = i; while (j < r.text.length && cls[j] === cls[i]) j++;
      if (cls[i]) out.push(h('mark', { class: cls[i], title: cls[i] === 'rep' ? 'repeated (predictable by copying)' : 'the earlier copy it repeats' }, underlined(i, j)));
      else out.push(...underlined(i, j));
      i = j;
    }
    return out;
  }
  function examplesCard(ex) {
    const id = `L${ex.layer}H${ex.head}`;
    const maxC = Math.max(1e-12, ...ex.top.map((r) => Math.abs(r.contribution || 0)));
    const steps = ex.steps || ['?', '?'];
    const rt = ex.retrain;
    const name = { baseline: 'baseline (unchanged)', top_replaced: 'top-ranked rows replaced', random_replaced: 'random rows replaced' };
    return h('div', { class: 'card examples', id: 'examples-' + id, 'data-layer': ex.layer, 'data-head': ex.head },
      h('h3', {}, `Examples that wrote L${ex.layer}.H${ex.head}: steps ${steps[0]}–${steps[1]} (${ex.window_source || ''}), ${fmt(ex.rows)} rows ranked`),
      h('p', { class: 'small muted' }, 'Each training row (batch row of a step) by how far its own gradient moved the head\'s Q/K/V/O slices along the update actually taken (exact replay). ',
        h('mark', { class: 'rep' }, 'quoted repeat'), ' = the data\'s repeated span (predictable by copying); ', h('mark', { class: 'src' }, 'earlier copy'), ' = what it repeats; ',
        h('u', { class: 'ind' }, 'underlined'), ' = tokens induction could predict ([A][B] … [A] → [B]), natural repeats included.'),
      ex.summary_line ? h('p', { class: 'ex-summary' }, ex.summary_line) : null,
      ex.window_writes && ex.window_writes.focus ? h('p', { class: 'small ex-writes' }, `Over these steps L${ex.layer}.H${ex.head} took ${(100 * ex.window_writes.focus.share).toFixed(1)}% of the attention head writes (${(100 * ex.window_writes.focus.share_of_all).toFixed(1)}% of the whole update ‖Δw‖²), rank ${ex.window_writes.focus.rank} of ${ex.window_writes.focus.of} heads; by level: ` +
        ex.window_writes.levels.filter((l) => l.update_share >= 0.005).map((l) => `${l.level} ${(100 * l.update_share).toFixed(1)}%`).join(', ')) : null,
      rt ? h('table', { class: 'grid ex-retrain' }, h('tr', {}, h('th', {}, `retrained from step ${rt.from_step} to ${rt.until}, ${rt.replaced_rows} rows replaced`), h('th', {}, rt.thresholds ? `${rt.role} rises ${rt.thresholds[0]} → ${rt.thresholds[1]} at step` : `${rt.role} forms at step`),
        h('th', {}, rt.midpoint === null || rt.midpoint === undefined ? 'score crosses the midpoint at step' : `score crosses ${fmt(rt.midpoint, 2)} at step`)),
        [['baseline', rt.baseline], ['top_replaced', rt.top_replaced], ...(rt.random_sets || [rt.random_replaced]).map((v, i) => ['random_replaced' + (rt.random_sets ? '_' + i : ''), v])].map(([k, v]) =>
          h('tr', { 'data-variant': k }, h('td', {}, name[k] || `random rows replaced (set ${+k.split('_').pop() + 1})`),
            h('td', { class: 'num' }, v.phase_change_step === null ? 'no full rise' : v.phase_change_step),
            h('td', { class: 'num cross' }, v.crossing_step === null || v.crossing_step === undefined ? '–' : fmt(v.crossing_step, 1))))) : null,
      h('table', { class: 'grid ex-rows' }, h('tr', {}, ['step', 'row', 'contribution', 'text (repeated part marked)'].map((c) => h('th', {}, c))),
        ex.top.map((r) => h('tr', { class: 'ex-row', 'data-step': r.step, 'data-row': r.row },
          h('td', { class: 'num' }, r.step), h('td', { class: 'num' }, r.row),
          h('td', { class: 'num' }, h('span', { class: 'hbar', style: `width:${Math.round(80 * Math.abs(r.contribution || 0) / maxC)}px;background:${(r.contribution || 0) >= 0 ? '#0072B2' : '#D55E00'}` }), ' ', signed(r.contribution, 4)),
          h('td', { class: 'span' }, spanText(r))))));
  }

  function timelineChart(tl, id) {
    const cps = tl.checkpoints || [];
    const W = 560, Hh = 200, pad = 42;
    const cv = h('canvas', { id, width: W, height: Hh + 130, 'aria-label': 'probe scores over steps, loss below' });
    const steps = cps.map((c) => c.step);
    const lo = Math.max(1, Math.min(...steps)), hi = Math.max(...steps, lo + 1);
    const xs = (s) => pad + (Math.log(Math.max(s, lo)) - Math.log(lo)) / Math.max(1e-9, Math.log(hi) - Math.log(lo)) * (W - 2 * pad);
    const g = cv.getContext('2d');
    g.fillStyle = '#fff'; g.fillRect(0, 0, W, cv.height);
    g.strokeStyle = '#999'; g.strokeRect(pad, 10, W - 2 * pad, Hh - 20);
    g.font = '10px system-ui, sans-serif'; g.fillStyle = '#333';
    g.fillText('score 1', 2, 16); g.fillText('0', pad - 10, Hh - 10);
    const ys = (v) => 10 + (1 - v) * (Hh - 20);
    const series = {};
    for (const c of cps) for (const x of c.heads) (series[x.layer + '.' + x.head] = series[x.layer + '.' + x.head] || []).push([c.step, x.scores[S.role] || 0]);
    const last = (pts) => pts[pts.length - 1][1];
    const best = Object.entries(series).sort((a, b) => last(b[1]) - last(a[1])).slice(0, 3).map((e) => e[0]);
    const order = Object.keys(series).sort((a, b) => best.indexOf(a) - best.indexOf(b));
    for (const k of order) { // grey first, the three highest last (on top)
      const pts = series[k], top = best.indexOf(k);
      g.strokeStyle = top >= 0 ? ['#0072B2', '#D55E00', '#009E73'][top] : '#d0d0d0'; g.lineWidth = top >= 0 ? 2 : 1;
      g.beginPath(); pts.forEach(([st, v], i) => (i ? g.lineTo : g.moveTo).call(g, xs(st), ys(v))); g.stroke();
      if (top >= 0) { g.fillStyle = g.strokeStyle; g.fillText('L' + k.replace('.', '.H'), Math.min(xs(pts[pts.length - 1][0]) + 3, W - pad + 2), ys(last(pts)) + 3); }
    }
    for (const pc of tl.phase_changes || []) if (pc.role === S.role) {
      g.strokeStyle = '#e00'; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(xs(pc.step), 10); g.lineTo(xs(pc.step), Hh + 115); g.stroke(); g.setLineDash([]);
      g.fillStyle = '#e00'; g.fillText(`phase change L${pc.layer}.H${pc.head} @ step ${pc.step}`, Math.min(xs(pc.step) + 3, W - 190), 24);
    }
    const m = tl.metrics || {};
    const loss = (m.loss && m.step) ? m.step.map((st, i) => [st, m.loss[i]]).filter((p) => p[0] >= lo && Number.isFinite(p[1])) : cps.map((c) => [c.step, c.loss]);
    if (loss.length) {
      const lmax = Math.max(...loss.map((p) => p[1])), lmin = Math.min(...loss.map((p) => p[1]));
      const yl = (v) => Hh + 10 + (1 - (v - lmin) / Math.max(1e-9, lmax - lmin)) * 100;
      g.strokeStyle = '#999'; g.strokeRect(pad, Hh + 5, W - 2 * pad, 110);
      g.strokeStyle = '#333'; g.lineWidth = 1; g.beginPath(); loss.forEach(([st, v], i) => (i ? g.lineTo : g.moveTo).call(g, xs(st), yl(v))); g.stroke();
      g.fillStyle = '#333'; g.fillText(`loss ${fmt(lmax, 2)}`, 2, Hh + 16); g.fillText(fmt(lmin, 2), 2, Hh + 112);
      g.fillText(`step ${lo} … ${hi} (log scale)`, W / 2 - 50, Hh + 128);
    }
    return cv;
  }

  // ---------- Overlay: generate, step through the trace, score terms, feedback, replay ----------
  const TERMS = ['next', 'cooc', 'semantic', 'triad', 'suffix', 'feedback'];
  const TERM_COLOURS = { next: '#0072B2', cooc: '#56B4E9', semantic: '#009E73', triad: '#E69F00', suffix: '#D55E00', feedback: '#CC79A7' };
  async function viewOverlay() {
    const wrap = h('section', { class: 'overlay' });
    const prompt = h('input', { id: 'ov-prompt', size: 60, value: 'In the beginning', 'aria-label': 'prompt' });
    const mode = h('select', { id: 'ov-mode', 'aria-label': 'mode' }, ['table', 'mixture', 'select'].map((m) => h('option', { value: m }, m)));
    const n = h('input', { id: 'ov-max', type: 'number', min: 1, max: 64, value: 12, 'aria-label': 'max tokens' });
    const go = h('button', { id: 'ov-go' }, 'Generate');
    const out = h('div', { class: 'card', id: 'ov-out' }, h('p', { class: 'muted' }, 'Generate to see every step traced. table: the index alone; mixture/select: SmolLM2 weighs in.'));
    wrap.append(h('h2', {}, `Overlay generator on ${label(S.src)}`), h('div', { class: 'form' }, h('label', {}, 'prompt ', prompt), h('label', {}, 'mode ', mode), h('label', {}, 'tokens ', n), go), out);
    go.onclick = async () => {
      out.replaceChildren(h('p', { class: 'muted' }, 'generating…'));
      try {
        const trace = await Data.post('/api/overlay/generate', { src: S.src, prompt: prompt.value, max_tokens: +n.value, mode: mode.value });
        showTrace(trace, out);
      } catch (e) { out.replaceChildren(h('div', { class: 'error' }, 'error: ' + e.message)); }
    };
    return wrap;
  }
  function showTrace(trace, out) {
    window.glassbox.last.trace = trace;
    const stepBox = h('div', { id: 'ov-step' });
    const msg = h('p', { class: 'small', id: 'ov-msg' });
    const toks = trace.steps.map((s, i) => h('button', { class: 'otok', 'data-step': i, onclick: () => showStep(i) }, visible(s.chosen_text)));
    function showStep(i) {
      for (const b of toks) b.classList.toggle('on', +b.dataset.step === i);
      const s = trace.steps[i];
      const maxAbs = Math.max(1e-9, ...s.candidates.flatMap((c) => TERMS.map((t) => Math.abs(c.terms[t] || 0))));
      const rows = s.candidates.slice(0, 15).map((c) => h('tr', { class: c.token === s.chosen ? 'chosen' : '', 'data-token': c.token },
        h('td', {}, h('code', {}, visible(c.text))), h('td', {}, c.sources.join(', ')),
        h('td', {}, h('span', { class: 'terms' }, TERMS.map((t) => h('span', { title: `${t} ${fmt(c.terms[t] || 0, 4)}`, style: `width:${Math.round(60 * Math.abs(c.terms[t] || 0) / maxAbs)}px;background:${TERM_COLOURS[t]}` })))),
        h('td', { class: 'num' }, fmt(c.p_table, 4)), h('td', { class: 'num' }, c.lm_logprob === null ? '–' : fmt(c.lm_logprob, 3)), h('td', { class: 'num' }, fmt(c.final, 3)),
        h('td', {}, h('button', { class: 'fb', 'data-prefer': c.text, onclick: () => feedback(i, c.text, true) }, 'prefer'), h('button', { class: 'fb', onclick: () => feedback(i, c.text, false) }, 'reject'))));
      stepBox.replaceChildren(h('h3', {}, `step ${i}: after …${visible(s.context_tail)} → ${visible(s.chosen_text)}`),
        h('p', { class: 'small muted' }, `${s.candidates.length} candidates; longest corpus match ${s.match_length} tokens; ` + (s.lm_top_text === null ? 'no LM' : `the LM's own top: ${visible(s.lm_top_text)} (rank ${s.lm_top_rank === null ? 'absent' : s.lm_top_rank})`)),
        h('div', { class: 'legend' }, TERMS.map((t) => h('span', { class: 'lg' }, h('span', { class: 'dot', style: `background:${TERM_COLOURS[t]}` }), t))),
        h('table', { class: 'grid', id: 'ov-candidates' }, h('tr', {}, ['token', 'sources', 'score terms', 'p_table', 'LM logp', 'final', 'feedback'].map((x) => h('th', {}, x))), rows));
    }
    async function feedback(step, text, prefer) {
      try {
        const r = await Data.post('/api/overlay/feedback', { trace: trace.id, step, text, prefer });
        msg.textContent = `feedback #${r.feedback_id}: ${prefer ? 'prefer' : 'reject'} ${visible(r.text)} at step ${step}; later generations use it.`;
        window.glassbox.last.feedback = r; document.body.dataset.feedback = String(r.feedback_id);
      } catch (e) { msg.textContent = 'error: ' + e.message; }
    }
    const replay = h('button', { id: 'ov-replay', onclick: async () => {
      try {
        const r = (await api('/api/overlay/replay?id=' + enc(trace.id), { method: 'POST' })).body;
        msg.textContent = r.identical ? 'replay: identical output from the trace alone' : 'replay differs: ' + r.output;
        window.glassbox.last.replay = r; document.body.dataset.replay = String(r.identical);
      } catch (e) { msg.textContent = 'error: ' + e.message; }
    } }, 'Replay');
    out.replaceChildren(h('p', {}, h('b', {}, trace.prompt), h('span', { class: 'otoks' }, toks)),
      h('p', { class: 'small muted' }, `trace ${trace.id}: ${trace.steps.length} steps, stopped on ${trace.stop_reason}, ${fmt(trace.ms_per_token, 1)} ms/token. Click a token to see why it won.`),
      replay, msg, stepBox);
    document.body.dataset.trace = trace.id;
    if (trace.steps.length) showStep(0);
  }

  boot();
})();
