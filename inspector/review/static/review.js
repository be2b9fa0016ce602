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
