/*
 * A campaign's page in the staff console. A file, not an inline script: the console's
 * Content-Security-Policy refuses inline code.
 *
 * - [data-campaign-progress data-url]: polls the staff-only JSON view (campaign_progress) and
 *   updates the bar, the counts by delivery status, the rate, the ETA and the status label,
 *   without reloading the page. It polls while the page is visible.
 * - select#id_segment[data-count-url]: shows how many users the segment chosen holds now.
 */
(function () {
  "use strict";

  var POLL_MS = 1500;

  function text(root, selector, value) {
    var el = root.querySelector(selector);
    if (el) el.textContent = value;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    seconds = Math.round(seconds);
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function show(root, body) {
    var bar = root.querySelector("[data-progress-bar]");
    if (bar) bar.value = body.percent || 0;
    text(root, "[data-progress-percent]", (+body.percent || 0).toFixed(1) + " %");
    text(root, "[data-progress-total]", (+body.total || 0).toLocaleString());
    text(root, "[data-progress-rate]", body.per_second ? (+body.per_second).toFixed(1) : "—");
    text(root, "[data-progress-eta]", duration(body.eta_seconds));
    Object.keys(body.by_status || {}).forEach(function (status) {
      var cell = root.querySelector('[data-count="' + status + '"]');
      if (cell) cell.textContent = (+body.by_status[status]).toLocaleString();
    });
    var label = document.querySelector("[data-campaign-status]");
    if (label && body.status) {
      label.dataset.campaignStatus = body.status;
      label.textContent = body.status_label || body.status;
    }
    var reason = document.querySelector("[data-pause-reason]");
    if (reason) {
      reason.hidden = !body.pause_reason;
      text(reason, "[data-pause-reason-text]", body.pause_reason || "");
    }
    root.dataset.updated = String(Date.now());
  }

  function poll(root) {
    var url = root.dataset.url;
    var timer = null;
    function tick() {
      timer = null;
      if (document.hidden) return;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.ok ? response.json() : null;
        })
        .then(function (body) {
          if (body) show(root, body);
        })
        .catch(function () {})
        .finally(function () {
          if (!timer) timer = window.setTimeout(tick, POLL_MS);
        });
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && !timer) tick();
    });
    tick();
  }

  function segmentCount(select) {
    var template = select.dataset.countUrl;
    var hint = document.createElement("p");
    hint.className = "cmp-segment-count";
    hint.setAttribute("data-segment-count", "");
    select.closest(".flex, div").parentNode.appendChild(hint);
    function update() {
      if (!select.value) {
        hint.textContent = "";
        return;
      }
      hint.textContent = "Counting…";
      var url = template.replace("00000000-0000-0000-0000-000000000000", select.value);
      // Consent and preference rules count for the campaign's category, as chosen in the form.
      var category = select.form && select.form.querySelector("[name=category]");
      if (category && category.value) url += "?category=" + encodeURIComponent(category.value);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.ok ? response.json() : null;
        })
        .then(function (body) {
          if (!body) hint.textContent = "";
          else if (body.count === null) hint.textContent = "Invalid rules: fix them to count.";
          else hint.textContent = (+body.count).toLocaleString() + " users in this segment now";
        })
        .catch(function () {
          hint.textContent = "";
        });
    }
    select.addEventListener("change", update);
    var categorySelect = select.form && select.form.querySelector("[name=category]");
    if (categorySelect) categorySelect.addEventListener("change", update);
    update();
  }

  function start() {
    document.querySelectorAll("[data-campaign-progress]").forEach(poll);
    document.querySelectorAll("select[data-count-url]").forEach(segmentCount);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
