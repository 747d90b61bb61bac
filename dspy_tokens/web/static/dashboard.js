// dspy-tokens dashboard: the theme (saved in this browser), the session lookup, and a confirmation before a
// real cleanup. Everything else is plain HTML and CSS, so the page works without scripts too.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = null;
  try { saved = window.localStorage.getItem("dspy-tokens-theme"); } catch (e) { saved = null; }
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  root.setAttribute("data-theme", saved || (dark ? "dark" : "light"));

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        var next = root.getAttribute("data-theme") === "dark" ? "light" : "dark";
        root.setAttribute("data-theme", next);
        try { window.localStorage.setItem("dspy-tokens-theme", next); } catch (e) { /* private mode */ }
      });
    }
    var lookup = document.getElementById("session-lookup");
    if (lookup) {
      lookup.addEventListener("submit", function (event) {
        event.preventDefault();
        var id = lookup.elements.session.value.trim();
        if (id) { window.location.href = lookup.getAttribute("data-base").replace("SESSION", encodeURIComponent(id)); }
      });
    }
    var cleanup = document.getElementById("cleanup-form");
    if (cleanup) {
      cleanup.addEventListener("submit", function (event) {
        if (!cleanup.elements.dry_run.checked &&
            !window.confirm("Delete every call older than " + cleanup.elements.older_than_days.value + " days?")) {
          event.preventDefault();
        }
      });
    }
  });
})();
