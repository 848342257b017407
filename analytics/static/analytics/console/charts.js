/*
 * The analytics pages' charts and filters. A file, not an inline script: the console's
 * Content-Security-Policy refuses inline code. Chart.js is unfold's copy, loaded before this
 * file by unfold's page skeleton.
 *
 * A chart is <canvas class="analytics-chart" data-type data-value data-format [data-stacked]
 * [data-horizontal]>: data-value is Chart.js' data (labels, datasets); data-format says how
 * its values read (count, percent, ms, money:EUR), which needs functions that a JSON
 * attribute cannot carry, hence these charts are drawn here rather than by unfold's app.js.
 */
(function () {
  "use strict";

  function formatter(format) {
    if (format === "percent") {
      return (v) => (v === null || v === undefined ? "—" : `${(+v).toFixed(1)} %`);
    }
    if (format === "ms") {
      return (v) => (v === null || v === undefined ? "—" : `${Math.round(v).toLocaleString()} ms`);
    }
    if (format && format.startsWith("money:")) {
      const currency = format.slice(6);
      let money;
      try {
        money = new Intl.NumberFormat(undefined, { style: "currency", currency });
      } catch (e) {
        money = { format: (v) => `${(+v).toFixed(2)} ${currency}` };
      }
      return (v) => (v === null || v === undefined ? "—" : money.format(v));
    }
    return (v) => (v === null || v === undefined ? "—" : (+v).toLocaleString());
  }

  function gridColor() {
    const dark = document.documentElement.classList.contains("dark");
    const value = getComputedStyle(document.documentElement)
      .getPropertyValue(dark ? "--color-base-700" : "--color-base-200")
      .trim();
    return value || (dark ? "#374151" : "#e5e7eb");
  }

  function draw(canvas) {
    const data = JSON.parse(canvas.dataset.value);
    const type = canvas.dataset.type || "bar";
    const format = formatter(canvas.dataset.format || "count");
    const stacked = canvas.dataset.stacked === "1";
    const horizontal = canvas.dataset.horizontal === "1";
    const valueAxis = horizontal ? "x" : "y";
    const labelAxis = horizontal ? "y" : "x";
    const scales = {};
    scales[labelAxis] = {
      stacked,
      grid: { display: false },
      border: { display: false },
      ticks: { color: "#9ca3af", autoSkip: true, maxRotation: 0 },
    };
    scales[valueAxis] = {
      stacked,
      beginAtZero: true,
      border: { display: false },
      grid: { color: gridColor() },
      ticks: { color: "#9ca3af", precision: 0, callback: (v) => format(v) },
    };
    if (canvas.dataset.format === "percent") {
      scales[valueAxis].max = 100;
    }
    return new Chart(canvas.getContext("2d"), {
      type,
      data,
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        indexAxis: horizontal ? "y" : "x",
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: {
            display: data.datasets.length > 1,
            position: "bottom",
            align: "start",
            labels: {
              usePointStyle: true,
              pointStyle: "circle",
              boxWidth: 6,
              boxHeight: 6,
              color: "#9ca3af",
            },
          },
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const value = horizontal ? ctx.parsed.x : ctx.parsed.y;
                return `${ctx.dataset.label}: ${format(value)}`;
              },
            },
          },
        },
        scales,
        datasets: {
          bar: { borderRadius: 3, maxBarThickness: 40 },
          line: { borderWidth: 2, pointRadius: 2, tension: 0.25 },
        },
      },
    });
  }

  // A preset range ignores the days (the server does too): they are left out of the query
  // so that the page's address says what it shows; choosing a day switches to a custom range.
  function filters(form) {
    const range = form.querySelector("[name=range]");
    const days = [...form.querySelectorAll("[name=from], [name=to]")];
    range.addEventListener("change", () => {
      if (range.value === "custom") {
        days[0].focus();
      } else {
        form.requestSubmit();
      }
    });
    days.forEach((input) =>
      input.addEventListener("change", () => {
        range.value = "custom";
        if (days.every((day) => day.value)) {
          form.requestSubmit();
        }
      }),
    );
    form.querySelectorAll("select[data-autosubmit]").forEach((select) =>
      select.addEventListener("change", () => form.requestSubmit()),
    );
    form.addEventListener("submit", () => {
      if (range.value !== "custom") {
        days.forEach((day) => {
          day.disabled = true;
        });
      }
    });
    // Back to this page from the browser's cache: the days as they were, usable again.
    window.addEventListener("pageshow", () => {
      days.forEach((day) => {
        day.disabled = false;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (typeof Chart !== "undefined") {
      Chart.defaults.font.family = "Inter";
      Chart.defaults.font.size = 12;
      document.querySelectorAll("canvas.analytics-chart").forEach(draw);
    }
    document.querySelectorAll("form[data-analytics-filters]").forEach(filters);
  });
})();
