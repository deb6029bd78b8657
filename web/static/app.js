// Aerie web UI: progressive enhancement only; every page works without this file.
"use strict";
(function () {
  // Live grapheme counter for the compose box.
  var seg = typeof Intl !== "undefined" && Intl.Segmenter ? new Intl.Segmenter() : null;
  function graphemes(s) {
    if (!seg) return Array.from(s).length;
    var n = 0;
    for (var _ of seg.segment(s)) n++;
    return n;
  }
  document.querySelectorAll("textarea[data-graphemes]").forEach(function (ta) {
    var max = parseInt(ta.dataset.graphemes, 10);
    var out = document.getElementById(ta.getAttribute("aria-describedby"));
    var button = ta.form.querySelector("button[type=submit]");
    function update() {
      var left = max - graphemes(ta.value.trim());
      out.textContent = left + " characters left";
      out.classList.toggle("over", left < 0);
      button.disabled = left < 0;
    }
    ta.addEventListener("input", update);
    update();
  });
  // Keep a form from being sent twice by a double click.
  document.addEventListener("submit", function (e) {
    var b = e.target.querySelector("button[type=submit]");
    if (b) setTimeout(function () { b.disabled = true; }, 0);
  });
})();
