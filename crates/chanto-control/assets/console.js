// chanto console: enhancements only; every page works without this file.
// Build pages: the log grows live (Server-Sent Events; the browser resumes
// with Last-Event-ID after a reconnect), the first error is marked and
// linked, and "Copy log" copies the text without line numbers.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log) return;
  var copy = document.getElementById("copy-log");
  if (copy && navigator.clipboard) {
    copy.hidden = false;
    copy.addEventListener("click", function () {
      var text = Array.prototype.map.call(log.querySelectorAll("li > code"), function (c) { return c.textContent; }).join("\n");
      navigator.clipboard.writeText(text + "\n").then(function () {
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = "Copy log"; }, 1500);
      }, function () { copy.textContent = "Copy failed: select the lines instead"; });
    });
  }
  var src = log.getAttribute("data-events");
  if (!src || !window.EventSource) return;
  var errorLink = document.getElementById("first-error");
  var isError = /^(error|fatal|failed)|error:|error\[|err!|command failed|exited with/i;
  function add(n, text) {
    var li = document.createElement("li");
    li.id = "L" + n;
    li.value = n;
    var code = document.createElement("code");
    code.textContent = text;
    li.appendChild(code);
    if (!errorLink && text.slice(0, 2) !== "$ " && isError.test(text.trim())) {
      li.className = "error";
      errorLink = document.createElement("a");
      errorLink.id = "first-error";
      errorLink.href = "#L" + n;
      errorLink.textContent = "First error: line " + n;
      var tools = document.querySelector(".log-tools");
      tools.appendChild(document.createTextNode(" · "));
      tools.appendChild(errorLink);
    }
    log.appendChild(li);
  }
  var follow = true;
  window.addEventListener("scroll", function () {
    follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  });
  var events = new EventSource(src);
  events.addEventListener("lines", function (e) {
    var empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    JSON.parse(e.data).lines.forEach(function (l) { add(l[0], l[1]); });
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  });
  events.addEventListener("end", function (e) {
    events.close();
    var state = JSON.parse(e.data).state;
    var badge = document.getElementById("build-state");
    badge.textContent = state;
    badge.className = "badge " + state;
  });
})();
