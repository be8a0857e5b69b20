'use strict';
// The synctalk page: avatars and their state, new avatars from a video, renders, and the live stream.
// Plain JS, no build step. The streaming protocol is described in the README ("Live avatars").

const $ = (id) => document.getElementById(id);
const SR = 16000, FPS = 25, HEADER = 28;
const page = { avatar: null, info: null, live: null };
// what the live view did, for people and for the browser test
const stats = window.synctalkStats = {
  speech: 0, idle: 0, shown: 0, late: 0, lastIndex: -1, ends: 0, errors: [], maxLateMs: 0,
  audioSeconds: 0, mode: null, ready: null, renders: 0,
};

async function api(path, opts) {
  const r = await fetch(path, opts);
  const json = (r.headers.get('content-type') || '').includes('json');
  const body = json ? await r.json() : await r.blob();
  if (!r.ok) throw new Error((json && body.error) || r.statusText);
  return body;
}

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const kid of kids) e.append(kid);
  return e;
}

// ---------------------------------------------------------------- avatars

async function loadAvatars() {
  const box = $('avatars');
  let list;
  try { list = (await api('/api/avatars')).avatars; } catch (e) { box.textContent = e.message; return; }
  box.replaceChildren();
  if (!list.length) box.append(el('p', { class: 'muted' }, 'No avatars yet: create one from a video below.'));
  for (const a of list) {
    const rows = el('table');
    for (const r of a.rows || []) rows.append(el('tr', {}, el('td', {}, r.step), el('td', {}, r.state)));
    const previews = el('div', { class: 'previews' });
    for (const p of a.previews || []) previews.append(el('img', { src: p, alt: 'preview' }));
    const card = el('div', { class: 'card' + (page.avatar === a.name ? ' selected' : ''), 'data-name': a.name },
      el('img', { src: `/api/avatars/${a.name}/frame.jpg`, alt: a.name }),
      el('b', {}, a.name, ' '),
      el('span', { class: 'badge' + (a.ready ? ' ready' : '') }, a.ready ? 'ready' : 'not trained'),
      a.next ? el('div', { class: 'muted' }, 'next: ' + a.next) : '', rows, previews);
    card.addEventListener('click', () => selectAvatar(a.name));
    box.append(card);
  }
  if (!page.avatar) { const first = list.find((a) => a.ready) || list[0]; if (first) selectAvatar(first.name); }
}

function selectAvatar(name) {
  page.avatar = name;
  $('current').textContent = name;
  for (const c of document.querySelectorAll('.card')) c.classList.toggle('selected', c.dataset.name === name);
}

// ---------------------------------------------------------------- jobs

function watchJob(id, box, onDone) {
  const bar = el('progress', { max: 100 });
  const line = el('div');
  const log = el('pre');
  box.replaceChildren(line, bar, log);
  let ticks = 0;
  const tick = async () => {
    let j;
    try { j = await api(`/api/jobs/${id}`); } catch (e) { line.textContent = e.message; return; }
    line.textContent = `job ${j.id}: ${j.kind} ${j.name} — ${j.status}` + (j.error ? ` (${j.error})` : '');
    if (j.percent != null) bar.value = j.percent; else bar.removeAttribute('value');
    log.textContent = (j.log || []).join('\n');
    if (j.status === 'queued' || j.status === 'running') {
      // training writes preview images as it goes: show them while it runs
      if (j.kind !== 'render' && ++ticks % 8 === 0) loadAvatars();
      setTimeout(tick, 700);
      return;
    }
    bar.value = 100;
    loadAvatars();
    if (onDone) onDone(j);
  };
  tick();
}

async function listJobs() {
  const box = $('jobs');
  const { jobs } = await api('/api/jobs');
  for (const j of jobs) {
    if (document.getElementById(`job-${j.id}`)) continue;
    const div = el('div', { class: 'job', id: `job-${j.id}` });
    box.prepend(div);
    if (j.kind !== 'render') watchJob(j.id, div);
  }
}

$('create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const { job } = await api('/api/avatars', { method: 'POST', body: new FormData(ev.target) });
    const div = el('div', { class: 'job', id: `job-${job.id}` });
    $('jobs').prepend(div);
    watchJob(job.id, div);
  } catch (e) { $('jobs').prepend(el('div', { class: 'error' }, e.message)); }
});

$('train-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const args = (f.get('args') || '').split(/\s+/).filter(Boolean);
  try {
    const { job } = await api('/api/jobs', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ kind: f.get('kind'), name: page.avatar, args }),
    });
    const div = el('div', { class: 'job', id: `job-${job.id}` });
    $('jobs').prepend(div);
    watchJob(job.id, div);
  } catch (e) { $('jobs').prepend(el('div', { class: 'error' }, e.message)); }
});

// ---------------------------------------------------------------- renders

async function renderUpload(blob, filename) {
  const form = new FormData();
  form.append('name', page.avatar);
  form.append('audio', blob, filename);
  const box = $('render-job');
  try {
    const { job } = await api('/api/render', { method: 'POST', body: form });
    watchJob(job.id, box, (j) => {
      if (j.status !== 'done') return;
      const v = $('render-video');
      v.src = j.output;
      v.play().catch(() => {});
      stats.renders += 1;
    });
  } catch (e) { box.replaceChildren(el('div', { class: 'error' }, e.message)); }
}

$('render-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = $('render-file').files[0];
  if (f) renderUpload(f, f.name);
});

let recorder = null;
$('record').addEventListener('click', async () => {
  if (recorder) { recorder.stop(); return; }
  const media = await navigator.mediaDevices.getUserMedia({ audio: true });
  const parts = [];
  recorder = new MediaRecorder(media, { mimeType: 'audio/webm' });
  recorder.ondataavailable = (e) => parts.push(e.data);
  recorder.onstop = () => {
    media.getTracks().forEach((t) => t.stop());
    recorder = null;
    $('record').textContent = 'Record';
    renderUpload(new Blob(parts, { type: 'audio/webm' }), 'recording.webm');
  };
  recorder.start();
  $('record').textContent = 'Stop recording';
});

// ---------------------------------------------------------------- live

function toPcm16(f32) {
  const out = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) out[i] = Math.max(-1, Math.min(1, f32[i])) * 32767;
  return out.buffer;
}

class Live {
  // One WebSocket stream. `file` mode plays the audio here, delayed by `delay` seconds, and shows
  // speech frame k when the local clock reaches sample k*640: picture and sound stay together.
  // `mic` mode shows each frame as soon as it arrives (least delay; the speaker hears themselves).
  constructor(name, mode) {
    this.name = name; this.mode = mode; this.queue = []; this.closed = false;
    this.canvas = $('screen'); this.g = this.canvas.getContext('2d');
    this.ctx = new AudioContext({ sampleRate: SR });
    stats.mode = mode;
  }

  open() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // the audio goes out in real time and this page schedules the pictures itself: no server pacing
    // a live microphone sheds frames rather than fall ever further behind on a slow device
    const lag = this.mode === 'mic' ? '&max_lag_ms=1000' : '';
    this.ws = new WebSocket(`${proto}//${location.host}/ws/stream?name=${encodeURIComponent(this.name)}&pace=asap${lag}`);
    this.ws.binaryType = 'arraybuffer';
    this.ws.onmessage = (m) => this.message(m);
    this.ws.onclose = () => { this.closed = true; };
    return new Promise((resolve, reject) => { this.onready = resolve; this.ws.onerror = () => reject(new Error('WebSocket failed')); });
  }

  message(m) {
    if (typeof m.data === 'string') {
      const msg = JSON.parse(m.data);
      if (msg.type === 'ready') { this.ready = msg; stats.ready = msg; this.onready(msg); }
      else if (msg.type === 'end') stats.ends += 1;
      else if (msg.type === 'error') { stats.errors.push(msg.message); showStats(msg.message); }
      return;
    }
    const v = new DataView(m.data);
    const kind = v.getUint8(4), index = v.getInt32(12, true);
    const blob = new Blob([new Uint8Array(m.data, HEADER)], { type: 'image/jpeg' });
    // decodes may finish out of order: chain them, so frames are handled in the order they came
    this.decoding = (this.decoding || Promise.resolve()).then(() => createImageBitmap(blob)).then((bmp) => {
      if (kind === 1) {
        stats.speech += 1; stats.lastIndex = index;
        if (this.mode === 'file' && this.t0 != null) {
          const lateMs = 1000 * (this.ctx.currentTime - (this.t0 + index / FPS));
          if (lateMs > 1000 / FPS) { stats.late += 1; }
          stats.maxLateMs = Math.max(stats.maxLateMs, lateMs);
          this.queue.push({ index, bmp });
        } else this.draw(bmp);
      } else {
        stats.idle += 1;
        if (!this.queue.length && !this.speaking()) this.draw(bmp);
      }
    }).catch((e) => { stats.errors.push(`frame decode: ${e.message}`); });
  }

  speaking() { return this.t0 != null && this.ctx.currentTime < this.t0 + this.duration; }

  draw(bmp) {
    if (this.canvas.width !== bmp.width) { this.canvas.width = bmp.width; this.canvas.height = bmp.height; }
    this.g.drawImage(bmp, 0, 0);
    stats.shown += 1;
  }

  loop() {
    if (this.closed) return;
    if (this.queue.length && this.t0 != null) {
      const due = Math.floor((this.ctx.currentTime - this.t0) * FPS);
      let pick = null;
      while (this.queue.length && this.queue[0].index <= due) pick = this.queue.shift();
      if (pick) this.draw(pick.bmp);
    }
    showStats();
    requestAnimationFrame(() => this.loop());
  }

  async streamFile(file) {
    const data = await file.arrayBuffer();
    const decoded = await this.ctx.decodeAudioData(data);  // resampled to the context's 16 kHz
    const pcm = decoded.getChannelData(0);
    this.duration = pcm.length / SR;
    stats.audioSeconds = this.duration;
    const delay = (this.ready.min_delay_ms + 400) / 1000;  // look-ahead + chunking + drawing margin
    const start = this.ctx.currentTime + 0.05;
    this.t0 = start + delay;  // sample 0 plays here, and so does frame 0
    const src = this.ctx.createBufferSource();
    src.buffer = decoded; src.connect(this.ctx.destination); src.start(this.t0);
    this.source = src;
    this.loop();
    const chunk = SR / 10;  // 100 ms messages, sent as the audio "happens"
    let sent = 0;
    await new Promise((resolve) => {
      const timer = setInterval(() => {
        if (this.closed) { clearInterval(timer); resolve(); return; }
        const due = Math.min(pcm.length, Math.floor((this.ctx.currentTime - start) * SR) + chunk);
        while (sent < due) {
          const n = Math.max(Math.min(chunk, pcm.length - sent), 320);
          const part = new Float32Array(n); part.set(pcm.subarray(sent, Math.min(sent + n, pcm.length)));
          this.ws.send(toPcm16(part));
          sent += n;
        }
        if (sent >= pcm.length) { this.ws.send(JSON.stringify({ type: 'end' })); clearInterval(timer); resolve(); }
      }, 20);
    });
  }

  async streamMic() {
    this.media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    const input = this.ctx.createMediaStreamSource(this.media);
    const proc = this.ctx.createScriptProcessor(2048, 1, 1);  // 128 ms at 16 kHz
    proc.onaudioprocess = (e) => { if (!this.closed) { this.ws.send(toPcm16(e.inputBuffer.getChannelData(0))); stats.audioSeconds += 2048 / SR; } };
    input.connect(proc); proc.connect(this.ctx.destination);
    this.proc = proc;
    this.loop();
  }

  close() {
    this.closed = true;
    try { this.ws.send(JSON.stringify({ type: 'end' })); } catch (e) { /* already closed */ }
    this.ws.close();
    if (this.source) this.source.stop();
    if (this.proc) this.proc.disconnect();
    if (this.media) this.media.getTracks().forEach((t) => t.stop());
    this.ctx.close();
  }
}

function showStats(error) {
  const s = stats;
  const items = { mode: s.mode || '–', 'least delay': s.ready ? `${s.ready.min_delay_ms} ms (${s.ready.asr})` : '–',
    'speech frames': s.speech, 'idle frames': s.idle, shown: s.shown, 'late (>40 ms)': s.late, 'last index': s.lastIndex };
  const dl = $('live-stats');
  dl.replaceChildren();
  for (const [k, v] of Object.entries(items)) dl.append(el('dt', {}, k), el('dd', {}, String(v)));
  if (error) dl.append(el('dt', { class: 'error' }, 'error'), el('dd', { class: 'error' }, error));
}

async function startLive(mode) {
  if (!page.avatar) { showStats('choose an avatar first'); return; }
  if (page.live) page.live.close();
  const live = page.live = new Live(page.avatar, mode);
  $('stop').disabled = false;
  try {
    await live.open();
    if (mode === 'file') {
      const f = $('live-file').files[0];
      if (!f) { showStats('choose an audio file first'); return; }
      await live.streamFile(f);
    } else await live.streamMic();
  } catch (e) { stats.errors.push(e.message); showStats(e.message); }
}

$('mic').addEventListener('click', () => startLive('mic'));
$('stream-file').addEventListener('click', () => startLive('file'));
$('stop').addEventListener('click', () => { if (page.live) page.live.close(); page.live = null; $('stop').disabled = true; });
$('refresh').addEventListener('click', () => { loadAvatars(); listJobs(); });

(async () => {
  try {
    page.info = await api('/api/info');
    $('info').textContent = `device ${page.info.device} · loaded: ${page.info.loaded.join(', ') || 'none'}`;
  } catch (e) { $('info').textContent = e.message; }
  await loadAvatars();
  listJobs().catch(() => {});
  showStats();
})();
