// Safety Sentinel console: live countdowns. Plain JavaScript, no library; written for this project.
// The server renders every clock; this only keeps them moving, using the server's time (skew-corrected).
(function () {
  "use strict";
  var serverNow = Date.parse(document.body.getAttribute("data-server-now") || "");
  var skew = isNaN(serverNow) ? 0 : serverNow - Date.now();
  function text(ms) {
    var minutes = Math.floor(Math.abs(ms) / 60000);
    var days = Math.floor(minutes / 1440), hours = Math.floor((minutes % 1440) / 60), mins = minutes % 60;
    if (days >= 4) return days + " d " + hours + " h";
    hours += days * 24;
    var mm = (mins < 10 ? "0" : "") + mins;
    return hours ? hours + " h " + mm + " min" : mins + " min";
  }
  function tick() {
    var now = Date.now() + skew;
    var clocks = document.querySelectorAll(".clock[data-due]");
    for (var i = 0; i < clocks.length; i++) {
      var left = Date.parse(clocks[i].getAttribute("data-due")) - now;
      var overdue = left < 0;
      var words = overdue ? "overdue by " + text(left) : text(left) + " left";
      if (clocks[i].textContent !== words) clocks[i].textContent = words;
      clocks[i].classList.toggle("overdue", overdue);
    }
  }
  tick();
  setInterval(tick, 15000);
  // Pages that ask for it (the inbox) reload themselves, but never while the officer is filling a form.
  var refresh = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (refresh > 0) {
    setInterval(function () {
      var active = document.activeElement;
      var typing = active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
      var fields = document.querySelectorAll("input:not([type=hidden]), textarea");
      var filled = Array.prototype.some.call(fields, function (f) { return f.value; });
      if (!typing && !filled && !document.querySelector("details[open]")) window.location.reload();
    }, refresh * 1000);
  }
})();
