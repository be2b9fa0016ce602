// The keyboard of the review pages: a key presses the element that names it in data-key
// (g good, 1..9 defect classes, u unsure, z undo, arrows previous/next). No build step.
document.addEventListener("keydown", function (e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target.closest && e.target.closest("input, select, textarea")) return;
  var el = document.querySelector('[data-key="' + CSS.escape(e.key) + '"]');
  if (!el) return;
  e.preventDefault();
  if (el.tagName === "FORM") el.requestSubmit(); else el.click();
});

// The part image: fit, or real pixels at 1, 2, 4, 8x (click toggles fit / 1:1 at the point
// clicked); drag to pan; "h" shows or hides the heat map.
var ZOOMS = ["fit", "1", "2", "4", "8"];
function zoomTo(fig, z, at) {
  var pan = fig.querySelector(".pan"), img = fig.querySelector("img.frame");
  if (!pan || !img || !img.naturalWidth) return;
  var r = img.getBoundingClientRect(), p = pan.getBoundingClientRect();
  var px = at ? at.clientX : p.left + p.width / 2, py = at ? at.clientY : p.top + p.height / 2;
  var fx = (px - r.left) / r.width, fy = (py - r.top) / r.height;  // the point kept in view
  fig.dataset.zoom = z;
  fig.classList.toggle("real", z !== "fit");
  img.style.width = z === "fit" ? "" : img.naturalWidth * Number(z) + "px";
  fig.querySelector(".zoomed").textContent = z === "fit" ? "fit" : z + "×";
  var n = img.getBoundingClientRect();
  pan.scrollLeft = fx * n.width - (px - p.left);
  pan.scrollTop = fy * n.height - (py - p.top);
}
document.addEventListener("click", function (e) {
  var t = e.target.closest && e.target.closest("[data-zoom], .heat-toggle, figure.zoom .pan");
  if (!t) return;
  var fig = document.getElementById("zoom");
  if (t.classList.contains("heat-toggle")) {
    var off = document.body.classList.toggle("noheat");
    t.setAttribute("aria-pressed", off ? "false" : "true");
  } else if (t.dataset.zoom) {
    var i = ZOOMS.indexOf(fig.dataset.zoom), z = t.dataset.zoom;
    if (z === "+") z = ZOOMS[Math.min(ZOOMS.length - 1, i + 1)];
    if (z === "-") z = ZOOMS[Math.max(0, i - 1)];
    zoomTo(fig, z);
  } else if (!fig.dataset.dragged) {
    zoomTo(fig, fig.dataset.zoom === "fit" ? "1" : "fit", e);
  }
  delete fig.dataset.dragged;
});
document.addEventListener("mousedown", function (e) {
  var pan = e.target.closest && e.target.closest("figure.zoom.real .pan");
  if (!pan || e.button !== 0) return;
  var fig = pan.closest("figure"), x = e.clientX, y = e.clientY;
  var left = pan.scrollLeft, top = pan.scrollTop;
  e.preventDefault();
  fig.classList.add("panning");
  function move(m) {
    if (Math.abs(m.clientX - x) + Math.abs(m.clientY - y) > 3) fig.dataset.dragged = "1";
    pan.scrollLeft = left - (m.clientX - x);
    pan.scrollTop = top - (m.clientY - y);
  }
  function up() {
    fig.classList.remove("panning");
    document.removeEventListener("mousemove", move);
    document.removeEventListener("mouseup", up);
  }
  document.addEventListener("mousemove", move);
  document.addEventListener("mouseup", up);
});

// The operating-point slider on compare: each step shows that threshold's counts (the
// points come with the page, in data-points); "Show" asks the server without script.
document.addEventListener("input", function (e) {
  if (e.target.id !== "op") return;
  var points = JSON.parse(e.target.dataset.points), p = points[Number(e.target.value)];
  document.getElementById("op-t").textContent = p.t;
  Object.keys(p).forEach(function (k) {
    var cell = document.getElementById("op-" + k);
    if (cell) cell.textContent = p[k];
  });
});

// Regions: the overlay takes the image's pixel size; "b" (or the button) arms drawing: drag a
// box on the image, and the form is sent with it in the image's pixels.
function regionsFit() {
  var img = document.getElementById("full"), svg = document.getElementById("regions-overlay");
  if (img && svg && img.naturalWidth)
    svg.setAttribute("viewBox", "0 0 " + img.naturalWidth + " " + img.naturalHeight);
}
document.addEventListener("DOMContentLoaded", function () {
  var img = document.getElementById("full");
  if (!img) return;
  if (img.complete) regionsFit(); else img.addEventListener("load", regionsFit);
});
document.addEventListener("click", function (e) {
  if (e.target.closest && e.target.closest("#region-draw")) {
    document.body.classList.toggle("drawing");
  }
});
function imagePoint(img, e) {
  var r = img.getBoundingClientRect();
  var x = (e.clientX - r.left) / r.width * img.naturalWidth;
  var y = (e.clientY - r.top) / r.height * img.naturalHeight;
  return [Math.max(0, Math.min(img.naturalWidth, x)), Math.max(0, Math.min(img.naturalHeight, y))];
}
document.addEventListener("mousedown", function (e) {
  if (!document.body.classList.contains("drawing") || e.button !== 0) return;
  var img = document.getElementById("full"), box = document.getElementById("drawing-box");
  if (!img || !box || !e.target.closest("figure.zoom .layers")) return;
  e.preventDefault();
  e.stopImmediatePropagation();
  var a = imagePoint(img, e), b = a;
  function show() {
    box.setAttribute("x", Math.min(a[0], b[0])); box.setAttribute("y", Math.min(a[1], b[1]));
    box.setAttribute("width", Math.abs(b[0] - a[0])); box.setAttribute("height", Math.abs(b[1] - a[1]));
  }
  function move(m) { b = imagePoint(img, m); show(); }
  function up(u) {
    document.removeEventListener("mousemove", move, true);
    document.removeEventListener("mouseup", up, true);
    b = imagePoint(img, u); show();
    var w = Math.abs(b[0] - a[0]), h = Math.abs(b[1] - a[1]);
    document.body.classList.remove("drawing");
    if (w < 1 || h < 1) return;
    var f = document.getElementById("region-form");
    f.elements.x.value = Math.round(Math.min(a[0], b[0])); f.elements.y.value = Math.round(Math.min(a[1], b[1]));
    f.elements.w.value = Math.max(1, Math.round(w)); f.elements.h.value = Math.max(1, Math.round(h));
    f.dataset.drawn = "1";
    f.requestSubmit();
  }
  document.addEventListener("mousemove", move, true);
  document.addEventListener("mouseup", up, true);
}, true);
