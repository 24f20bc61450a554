// Review inbox: keyboard shortcuts and labelling in place (no reload). Vendored, no dependencies;
// the page works without it (forms post and redirect).
(function () {
  "use strict";
  var queue = document.querySelector("ol.queue");
  if (!queue) return;
  var status = document.getElementById("status");
  var left = document.getElementById("left");
  var today = document.getElementById("today");

  function open() { return Array.prototype.slice.call(queue.querySelectorAll("li.item:not(.done)")); }

  // the item the keys act on: the one holding the focus, else the first one not labelled yet
  function current() {
    var active = document.activeElement;
    var li = active && active.closest ? active.closest("li.item:not(.done)") : null;
    return li || open()[0] || null;
  }

  function markCurrent() {
    var first = current();
    queue.querySelectorAll("li.item").forEach(function (li) { li.classList.toggle("current", li === first); });
  }

  function say(message, failed) {
    status.textContent = message;
    status.classList.toggle("error", !!failed);
  }

  function finish(li, message) {
    li.style.height = li.getBoundingClientRect().height + "px"; // it keeps its place: nothing below moves
    li.classList.remove("current");
    li.classList.add("done");
    var note = document.createElement("p");
    note.className = "done-note";
    note.textContent = "\u2713 " + message;
    li.replaceChildren(note);
    var next = open()[0];
    if (next) {
      markCurrent();
      var confirm = next.querySelector("button.confirm");
      if (confirm) confirm.focus({ preventScroll: true });
      next.scrollIntoView({ block: "nearest" });
    } else {
      say(message + " That was the last one on this page: reload for more.");
    }
  }

  queue.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-label]")) return;
    event.preventDefault();
    var li = form.closest("li.item");
    if (li.getAttribute("aria-busy") === "true") return;
    var body = new URLSearchParams(new FormData(form, event.submitter || undefined));
    li.setAttribute("aria-busy", "true");
    fetch(form.action, {
      method: "POST",
      body: body,
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (r) { return r.json(); })
      .catch(function () { return { ok: false, message: "Not saved: the router did not answer. Try again." }; })
      .then(function (answer) {
        li.removeAttribute("aria-busy");
        say(answer.message, !answer.ok);
        if (!answer.ok) return;
        if (answer.left !== undefined && answer.left !== null) left.textContent = answer.left;
        if (answer.today !== undefined && answer.today !== null) today.textContent = answer.today;
        finish(li, answer.message);
      });
  });

  queue.addEventListener("focusin", markCurrent);

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target.closest && target.closest("input, select, textarea")) return;
    var li = current();
    if (!li) return;
    var key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    var button = null;
    if (key === "Enter") {
      if (target.closest && target.closest("button, a, summary")) return; // the focused control's own Enter
      button = li.querySelector("button.confirm");
    } else if (key === "/") {
      var search = li.querySelector("input[list]");
      if (search) { event.preventDefault(); search.focus(); }
      return;
    } else if (/^[1-9so]$/.test(key)) {
      button = li.querySelector('button[data-key="' + key + '"]');
    }
    if (button) {
      event.preventDefault();
      button.click();
    }
  });
})();
