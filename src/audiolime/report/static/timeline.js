// audiolime song timeline: a lane (one SVG per stem, its columns) is a slider; the arrow keys move a
// cursor along its columns and between lanes, Enter or a click plays that stretch of the stem's
// audio (the range, aligned with the lane); one sound at a time; a playhead follows what plays.
(() => {
  "use strict";
  const map = document.querySelector(".timeline.song");
  if (!map) return;
  const duration = parseFloat(map.dataset.duration) || 1;
  const audios = Array.from(document.querySelectorAll("audio"));
  const playhead = map.querySelector(".playhead");
  const status = document.querySelector("#song-timeline .status");
  const lanes = Array.from(map.querySelectorAll(".tl-lane")).map((svg) => ({
    svg, cols: Array.from(svg.querySelectorAll("rect.col")), cursor: svg.querySelector("rect.cursor"), at: 0,
  }));
  let active = null; // {audio, end, started}
  let timer = 0;
  const say = (text) => { if (status) status.textContent = text; };
  const fmt = (x) => parseFloat(x).toFixed(2);

  function describe(lane) {
    const c = lane.cols[lane.at];
    const name = document.getElementById(lane.svg.getAttribute("aria-labelledby")).textContent;
    if (!c) return name + ", no segments";
    const n = parseInt(c.dataset.n, 10);
    return name + ", " + fmt(c.dataset.s) + " to " + fmt(c.dataset.e) + " s, weight " + c.dataset.w +
      (n > 1 ? " (" + n + " segments)" : "");
  }

  function show(lane) {
    const c = lane.cols[lane.at];
    lane.svg.setAttribute("aria-valuenow", String(lane.at));
    lane.svg.setAttribute("aria-valuetext", describe(lane));
    if (c) {
      lane.cursor.setAttribute("x", c.getAttribute("x"));
      lane.cursor.setAttribute("width", c.getAttribute("width"));
      lane.cursor.setAttribute("visibility", "visible");
    }
  }

  function tick() {
    const playing = audios.find((a) => !a.paused && !a.ended);
    if (active) {
      if (active.audio.currentTime >= active.end) { active.audio.pause(); active = null; say(""); }
      else if (active.audio.paused && active.started) active = null;
    }
    if (playing && playhead) {
      const t = (parseFloat(playing.dataset.t0) || 0) + playing.currentTime;
      playhead.hidden = false;
      playhead.style.setProperty("--x", Math.min(Math.max(t / duration, 0), 1).toFixed(4));
    } else if (playhead) {
      playhead.hidden = true;
    }
    if (!playing && !active) { clearInterval(timer); timer = 0; }
  }
  function run() { if (!timer) timer = setInterval(tick, 25); }

  function play(lane) {
    const c = lane.cols[lane.at];
    const audio = document.getElementById(lane.svg.dataset.audio || "");
    if (!c || !audio) { say("No audio for " + describe(lane)); return; }
    const t0 = parseFloat(lane.svg.dataset.t0) || 0;
    const start = parseFloat(c.dataset.s) - t0, end = parseFloat(c.dataset.e) - t0;
    if (active && active.audio === audio && !audio.paused && Math.abs(active.start - start) < 1e-6) {
      audio.pause(); active = null; say(""); return;
    }
    const mine = { audio, start, end, started: false };
    active = mine;
    say("Playing " + describe(lane));
    audio.currentTime = Math.max(start, 0);
    const p = audio.play();
    const ok = () => { mine.started = true; run(); };
    if (p && p.then) p.then(ok, (err) => { if (active === mine) active = null; say("Cannot play: " + err.message); });
    else ok();
  }

  for (const a of audios) {
    a.addEventListener("play", () => { for (const b of audios) if (b !== a && !b.paused) b.pause(); run(); });
    a.addEventListener("error", () => say("Cannot load " + (a.getAttribute("aria-label") || a.id)));
  }

  // A top moment's "on the timeline" button: the cursor of its stem's lane moves to it.
  for (const b of document.querySelectorAll("button.goto")) {
    b.addEventListener("click", () => {
      const lane = lanes.find((l) => l.svg.id === b.dataset.lane);
      if (!lane) return;
      lane.at = Math.min(parseInt(b.dataset.col, 10) || 0, Math.max(lane.cols.length - 1, 0));
      lane.svg.focus();
      show(lane);
    });
  }

  lanes.forEach((lane, r) => {
    lane.svg.addEventListener("focus", () => show(lane));
    lane.svg.addEventListener("click", (e) => {
      const box = lane.svg.getBoundingClientRect();
      const x = (e.clientX - box.left) / box.width * 1000;
      const i = lane.cols.findIndex((c) => x < parseFloat(c.getAttribute("x")) + parseFloat(c.getAttribute("width")));
      if (i < 0) return;
      lane.at = i; lane.svg.focus(); show(lane); play(lane);
    });
    lane.svg.addEventListener("keydown", (e) => {
      const last = lane.cols.length - 1;
      const move = { ArrowRight: 1, ArrowLeft: -1, PageUp: 10, PageDown: -10 }[e.key];
      if (move !== undefined || e.key === "Home" || e.key === "End") {
        e.preventDefault();
        lane.at = e.key === "Home" ? 0 : e.key === "End" ? last : Math.max(0, Math.min(lane.at + move, last));
        show(lane);
      } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        const other = lanes[r + (e.key === "ArrowDown" ? 1 : -1)];
        if (!other) return;
        e.preventDefault();
        const c = lane.cols[lane.at];
        const t = c ? (parseFloat(c.dataset.s) + parseFloat(c.dataset.e)) / 2 : 0;
        const j = other.cols.findIndex((x) => parseFloat(x.dataset.e) > t);
        other.at = j < 0 ? Math.max(other.cols.length - 1, 0) : j;
        other.svg.focus();
        show(other);
      } else if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        play(lane);
      }
    });
  });
})();
