// Counts down every [data-countdown] element (seconds left when the page was
// rendered) and counts up every [data-seconds] age. No framework, no requests:
// the rotation itself happens on the server, on the first request after zero.
(function () {
  "use strict";
  var start = Date.now();
  function fmt(total) {
    var h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    if (h) return h + " h " + m + " min";
    return m ? m + " min " + s + " s" : s + " s";
  }
  function tick() {
    var elapsed = Math.floor((Date.now() - start) / 1000);
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var left = Number(el.dataset.countdown) - elapsed;
      el.textContent = left > 0 ? "in " + fmt(left) : "due: on your next request";
      el.classList.toggle("due", left <= 0);
    });
    document.querySelectorAll("[data-seconds]").forEach(function (el) {
      var text = fmt(Number(el.dataset.seconds) + elapsed);
      el.textContent = el.id === "id-age" ? text + " ago" : text;
    });
  }
  tick();
  setInterval(tick, 1000);
})();
