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
document.addEventListener("click", function (e) {
  var fig = e.target.closest && e.target.closest("figure.zoom");
  if (fig) fig.classList.toggle("real");
});
