// audiolime listening report: a heat-map cell plays its component (a time range of its stem's
// audio), one sound plays at a time, a playhead follows it, arrow keys move between cells.
(() => {
  "use strict";
  const audios = Array.from(document.querySelectorAll("audio"));
  const playheads = Array.from(document.querySelectorAll(".playhead"));
  let active = null; // the cell being played: {cell, audio, end, started}
  let timer = 0;

  const statusOf = (el) => el.closest("section").querySelector(".status");
  const say = (el, text) => { const s = el && statusOf(el); if (s) s.textContent = text; };

  function release() {
    if (!active) return;
    active.cell.setAttribute("aria-pressed", "false");
    active = null;
  }

  function tick() {
    const playing = audios.find((a) => !a.paused && !a.ended);
    if (active) {
      const a = active.audio;
      if (a.currentTime >= active.end) {
        a.pause();
        say(active.cell, "");
        release();
      } else if (a.paused && active.started) {
        release(); // paused by the user, or by another sound starting
      }
    }
    for (const p of playheads) {
      if (playing && playing.duration > 0) {
        p.hidden = false;
        p.style.setProperty("--x", Math.min(playing.currentTime / playing.duration, 1).toFixed(4));
      } else {
        p.hidden = true;
      }
    }
    if (!playing && !active) { clearInterval(timer); timer = 0; }
  }

  function run() { if (!timer) timer = setInterval(tick, 25); }

  function playCell(cell) {
    const audio = document.getElementById(cell.dataset.audio);
    if (!audio) return;
    if (active && active.cell === cell) { audio.pause(); release(); say(cell, ""); return; }
    release();
    const start = parseFloat(cell.dataset.start), end = parseFloat(cell.dataset.end);
    const mine = { cell, audio, end, started: false };
    active = mine;
    cell.setAttribute("aria-pressed", "true");
    say(cell, "Playing " + cell.getAttribute("aria-label"));
    audio.currentTime = start;
    const started = audio.play();
    const ok = () => { mine.started = true; run(); };
    if (started && started.then) {
      started.then(ok, (err) => { if (active === mine) release(); say(cell, "Cannot play: " + err.message); });
    } else {
      ok();
    }
  }

  for (const a of audios) {
    a.addEventListener("play", () => {
      for (const b of audios) if (b !== a && !b.paused) b.pause();
      run();
    });
    a.addEventListener("error", () => say(a, "Cannot load " + (a.getAttribute("aria-label") || a.id)));
  }

  // Cells: buttons with a roving tab stop per heat map (Tab enters and leaves it, arrows move).
  for (const map of document.querySelectorAll(".timeline")) {
    const lanes = Array.from(map.querySelectorAll(".lane.stem")).map((l) => Array.from(l.querySelectorAll(".cell")));
    const cells = lanes.flat();
    cells.forEach((c, i) => { c.tabIndex = i === 0 ? 0 : -1; });
    const focus = (c) => { if (!c) return; cells.forEach((x) => { x.tabIndex = -1; }); c.tabIndex = 0; c.focus(); };
    map.addEventListener("click", (e) => {
      const cell = e.target.closest(".cell");
      if (cell && !cell.disabled) { focus(cell); playCell(cell); }
    });
    map.addEventListener("keydown", (e) => {
      const cell = e.target.closest(".cell");
      if (!cell) return;
      const r = lanes.findIndex((l) => l.includes(cell)), i = lanes[r].indexOf(cell);
      const at = (rr, ii) => lanes[rr] && lanes[rr][Math.max(0, Math.min(ii, lanes[rr].length - 1))];
      const next = { ArrowRight: () => at(r, i + 1), ArrowLeft: () => at(r, i - 1), ArrowDown: () => at(r + 1, i),
        ArrowUp: () => at(r - 1, i), Home: () => at(r, 0), End: () => at(r, lanes[r].length - 1) }[e.key];
      if (next) { e.preventDefault(); focus(next()); }
    });
  }
})();
