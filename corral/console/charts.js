// Small line charts on <canvas>, drawn by hand: the console needs four of them and no library.
"use strict";

const Charts = (() => {
  const PAD = { left: 50, right: 22, top: 8, bottom: 20 };

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 4, 5, 8, 10]) { // each a multiple of 4 or 5 quarters: round labels
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function label(value, unit) {
    if (unit === "s") {
      if (value === 0) return "0";
      return value < 1 ? Math.round(value * 1000) + " ms" : (+value.toFixed(2)) + " s";
    }
    if (value >= 1000) return (+(value / 1000).toFixed(1)) + "k";
    return String(+value.toFixed(2));
  }

  // Draw `series` ([{name, color, values}]) over times `t` (epoch seconds, oldest first) on `canvas`.
  function draw(canvas, t, series, unit) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - PAD.top - PAD.bottom;
    let top = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > top) top = v;
    top = niceMax(top);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#eaecf0";
    ctx.fillStyle = "#667085";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = PAD.top + plotH - (plotH * i) / 4;
      ctx.beginPath();
      ctx.moveTo(PAD.left, Math.round(y) + 0.5);
      ctx.lineTo(PAD.left + plotW, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(label((top * i) / 4, unit), PAD.left - 6, y);
    }
    const n = t.length;
    if (n < 2) return;
    const x = (i) => PAD.left + (plotW * i) / (n - 1);
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const span = t[n - 1] - t[0];
    for (let k = 0; k <= 3; k++) {
      const i = Math.round(((n - 1) * k) / 3);
      const ago = Math.round((t[n - 1] - t[i]) / 60);
      ctx.fillText(k === 3 ? "now" : "−" + ago + " min", x(i), PAD.top + plotH + 5);
    }
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        const y = PAD.top + plotH - (plotH * v) / top;
        if (pen) ctx.lineTo(x(i), y); else ctx.moveTo(x(i), y);
        pen = true;
      });
      ctx.stroke();
      // A value with no neighbour (one step with a TTFT, say) would draw nothing as a line: a dot.
      ctx.fillStyle = s.color;
      s.values.forEach((v, i) => {
        if (v !== null && (i === 0 || s.values[i - 1] === null) && (i === n - 1 || s.values[i + 1] === null)) {
          ctx.beginPath();
          ctx.arc(x(i), PAD.top + plotH - (plotH * v) / top, 2.2, 0, 2 * Math.PI);
          ctx.fill();
        }
      });
    }
    canvas.dataset.span = String(span);
  }

  return { draw, label };
})();
